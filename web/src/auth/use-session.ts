import { createContext, useContext, useSyncExternalStore } from "react";
import type { Session, SessionSnapshot } from "./session.js";

export const SessionContext = createContext<Session | undefined>(undefined);

/** The app's Session object (tokens, sign in/out). */
export function useSessionObject(): Session {
  const session = useContext(SessionContext);
  if (!session) throw new Error("useSession outside <SessionContext>");
  return session;
}

/** The session's current state, re-rendering when it changes. */
export function useSession(): SessionSnapshot & { readonly session: Session } {
  const session = useSessionObject();
  const snapshot = useSyncExternalStore(session.subscribe, session.getSnapshot);
  return { ...snapshot, session };
}
