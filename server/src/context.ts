import { type ContextValues, createContextKey, createContextValues } from "@connectrpc/connect";
import type { Logger } from "pino";

/**
 * Per-call values, set by Fastify (peer) and by interceptors (request id,
 * logger, authenticated user) and read by later interceptors and handlers
 * through `context.values` / `req.contextValues`. Handlers take the caller's
 * identity only from here, never from a payload.
 */

/** Where a call came from, as the HTTP layer saw it. */
export interface Peer {
  /** Client IP address (the socket's remote address). */
  readonly ip: string;
  /** The User-Agent header, if any (truncated). */
  readonly userAgent: string;
}

/** The authenticated caller, from a verified access token. */
export interface AuthInfo {
  readonly userId: string;
  readonly username: string;
  readonly roles: readonly string[];
  /** The refresh-token session the access token was issued for. */
  readonly sessionId: string;
  /** The login (session family) of that session; absent in tokens issued before it was added. */
  readonly familyId?: string;
}

/** Set by the HTTP layer for every call. */
export const kPeer = createContextKey<Peer>(
  { ip: "unknown", userAgent: "" },
  { description: "peer" },
);

/** Set by the request-id interceptor. */
export const kRequestId = createContextKey<string>("", { description: "request id" });

/**
 * A call's logger, bound to fields such as its request id and procedure.
 * pino's `child()` serialises its bindings at once — microseconds on every
 * call — and most calls never log, so the child is made on first use.
 */
export class CallLogger {
  #child: Logger | undefined;

  constructor(
    /** The logger it derives from (and whose level it has). */
    readonly base: Logger,
    readonly bindings: Readonly<Record<string, unknown>>,
  ) {}

  /** `base.child(bindings)`, made once. */
  get logger(): Logger {
    if (this.#child === undefined) this.#child = this.base.child(this.bindings);
    return this.#child;
  }
}

/** The call's logger (request id, procedure); set by the request-id interceptor. */
export const kLogger = createContextKey<CallLogger | undefined>(undefined, {
  description: "call logger",
});

/** Set by the auth interceptor for authenticated calls; undefined on public ones. */
export const kAuth = createContextKey<AuthInfo | undefined>(undefined, { description: "auth" });

/** Builds the context values of one call from what the HTTP layer knows. */
export function contextValuesFor(peer: Peer): ContextValues {
  return createContextValues().set(kPeer, peer);
}
