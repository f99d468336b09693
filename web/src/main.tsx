import { QueryClient } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./app.js";
import { Session } from "./auth/session.js";
import { isRetryable, rpcError } from "./errors.js";
import "./styles.css";

const session = new Session();

const queryClient = new QueryClient({
  defaultOptions: {
    queries: {
      retry: (count, err) => count < 3 && isRetryable(rpcError(err)),
      refetchOnWindowFocus: false,
    },
    mutations: { retry: false },
  },
});

// Signing out (or a session the server ended) forgets everything cached.
let wasSignedIn = false;
session.subscribe(() => {
  const signedIn = session.getSnapshot().status === "signed-in";
  if (wasSignedIn && !signedIn) queryClient.clear();
  wasSignedIn = signedIn;
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App session={session} queryClient={queryClient} />
  </StrictMode>,
);
