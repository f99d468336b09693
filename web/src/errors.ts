import { Code, ConnectError } from "@connectrpc/connect";
import { type RpcError, toRpcError } from "../../shared/rpc-error.js";

/**
 * Turns any call error into copy people can act on. The typed view comes
 * from shared/rpc-error.ts (the same module the CLI uses); this file only
 * adds the browser's own failure mode (fetch failing outright) and the
 * words.
 */

export type { RpcError };

/**
 * `fetch` failing (server down, connection cut mid-stream) surfaces as a
 * TypeError that connect-web wraps as Code.Unknown. For a person that is
 * "can't reach the server", so it becomes Unavailable here.
 */
export function isNetworkFailure(error: unknown): boolean {
  if (error instanceof TypeError) return true;
  if (!(error instanceof ConnectError) || error.code !== Code.Unknown) return false;
  if (error.cause instanceof TypeError) return true;
  return /failed to fetch|network ?error|load failed|networkerror|err_/i.test(error.rawMessage);
}

/** `toRpcError` with network failures mapped to Unavailable. */
export function rpcError(error: unknown): RpcError {
  if (isNetworkFailure(error)) {
    return toRpcError(new ConnectError("cannot reach the server", Code.Unavailable));
  }
  return toRpcError(error);
}

/** Whether a call that failed this way is worth repeating unchanged, later. */
export function isRetryable(error: RpcError): boolean {
  switch (error.kind) {
    case "unavailable":
    case "deadline":
    case "rate_limited":
    case "internal":
    case "other":
      return true;
    default:
      return false;
  }
}

/** Copy for an ErrorInfo reason, where the reason says more than the code. */
const REASON_COPY: Record<string, string> = {
  USERNAME_TAKEN: "That username is already taken.",
  EMAIL_TAKEN: "An account with this email already exists.",
  INVALID_CREDENTIALS: "Wrong username or password.",
  TOKEN_MISSING: "Please sign in to continue.",
  TOKEN_EXPIRED: "Your session has expired. Please sign in again.",
  TOKEN_INVALID: "Your session is no longer valid. Please sign in again.",
  REFRESH_TOKEN_INVALID: "Your session has ended. Please sign in again.",
  REFRESH_TOKEN_EXPIRED: "Your session has expired. Please sign in again.",
  REFRESH_TOKEN_REUSED:
    "For your security this session was ended (it was used from two places). Please sign in again.",
  ROLE_REQUIRED: "You don't have permission to do that.",
  SUBSCRIBER_TOO_SLOW: "The connection fell behind. Catching up…",
};

/** Human copy for an error (one or two sentences, no codes). */
export function describeError(error: RpcError): string {
  const byReason = error.reason ? REASON_COPY[error.reason] : undefined;
  if (byReason) return byReason;
  switch (error.kind) {
    case "invalid":
      return Object.keys(error.fieldViolations).length > 0
        ? "Please correct the highlighted fields."
        : `That request was not accepted: ${error.message}`;
    case "conflict":
      return "That already exists.";
    case "unauthenticated":
      return "Please sign in again.";
    case "permission":
      return "You don't have permission to do that.";
    case "not_found":
      return "Not found.";
    case "rate_limited":
      return "Too many requests. Please wait a moment.";
    case "unavailable":
      return "Can't reach Switchboard right now. Reconnecting…";
    case "deadline":
      return "The server took too long to answer. Please try again.";
    case "canceled":
      return "The request was cancelled.";
    case "internal":
      return "Something went wrong on our side. Please try again.";
    default:
      return error.message || "Something went wrong.";
  }
}

/** A field's violations, with the server's field path mapped to the form's field name. */
export function fieldErrors(error: RpcError | undefined, field: string): readonly string[] {
  if (!error) return [];
  return error.fieldViolations[field] ?? [];
}

/** Sentence case for a violation description (`must be at least 8 characters`). */
export function sentence(text: string): string {
  const t = text.trim();
  if (!t) return t;
  const s = t[0]!.toUpperCase() + t.slice(1);
  return /[.!?]$/.test(s) ? s : `${s}.`;
}
