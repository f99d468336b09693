import { TransportProvider } from "@connectrpc/connect-query";
import { type QueryClient, QueryClientProvider } from "@tanstack/react-query";
import { useEffect, useMemo } from "react";
import { authInterceptor, type Session } from "./auth/session.js";
import { SessionContext, useSession } from "./auth/use-session.js";
import { AppHeader } from "./components/app-header.js";
import { navigate, usePath, useSearch } from "./hooks/use-route.js";
import { ChatPage } from "./pages/chat-page.js";
import { LoginPage } from "./pages/login-page.js";
import { NotFoundPage } from "./pages/not-found-page.js";
import { PeoplePage } from "./pages/people-page.js";
import { RegisterPage } from "./pages/register-page.js";
import { createTransport, parseTransportKind, TRANSPORT_PARAM } from "./transport.js";

export function App({ session, queryClient }: { session: Session; queryClient: QueryClient }) {
  const search = useSearch();
  const kind = parseTransportKind(new URLSearchParams(search).get(TRANSPORT_PARAM));
  const transport = useMemo(() => {
    // Refresh and Logout go out without the auth interceptor.
    session.setTransport(createTransport(kind));
    return createTransport(kind, [authInterceptor(session)]);
  }, [kind, session]);
  return (
    <SessionContext.Provider value={session}>
      <TransportProvider transport={transport}>
        <QueryClientProvider client={queryClient}>
          <a className="skip-link" href="#main">
            Skip to content
          </a>
          <AppHeader transportKind={kind} />
          <Routes />
        </QueryClientProvider>
      </TransportProvider>
    </SessionContext.Provider>
  );
}

const PUBLIC_PATHS = new Set(["/login", "/register"]);

function Routes() {
  const path = usePath();
  const search = useSearch();
  const { status } = useSession();
  const isPublic = PUBLIC_PATHS.has(path);
  const next = new URLSearchParams(search).get("next") ?? undefined;

  // Signed out on a private page: to the login screen, and back afterwards.
  useEffect(() => {
    if (status === "signed-out" && !isPublic) {
      const back = path === "/" ? "" : `?next=${encodeURIComponent(path)}`;
      navigate(`/login${back}`, { replace: true });
    }
    if (status === "signed-in" && isPublic) navigate(safeNext(next), { replace: true });
  }, [status, isPublic, path, next]);

  if (status === "restoring") {
    return (
      <main className="page page--center" id="main">
        <p className="loading" role="status">
          Restoring your session…
        </p>
      </main>
    );
  }
  if (path === "/login") return <LoginPage next={safeNext(next)} />;
  if (path === "/register") return <RegisterPage />;
  if (status !== "signed-in") return null;
  if (path === "/" || path === "/people") return <PeoplePage />;
  const chat = /^\/chat(?:\/([^/]+))?\/?$/.exec(path);
  if (chat) {
    const room = chat[1] ? decodeURIComponent(chat[1]) : undefined;
    if (!room) {
      navigate("/chat/general", { replace: true });
      return null;
    }
    return <ChatPage key={room} room={room} />;
  }
  return <NotFoundPage />;
}

/** Only same-app paths are followed after sign-in. */
function safeNext(next: string | undefined): string {
  return next?.startsWith("/") && !next.startsWith("//") ? next : "/";
}
