import { Code, ConnectError } from "@connectrpc/connect";
import { type RpcError, summarize, toRpcError } from "../../shared/rpc-error.js";

/**
 * How the CLI fails: every error ends up here, is printed typed (code,
 * message, field violations, retry delay, reason, request id) and mapped to
 * one exit code per class, so scripts can branch on `$?`.
 */

/** Exit codes, one per class of failure (documented in `--help` and client/README.md). */
export const ExitCode = {
  ok: 0,
  /** Anything else: internal server error, canceled, a bug. */
  other: 1,
  /** Bad command line: unknown option, missing argument, unreadable input file. */
  usage: 2,
  /** Not logged in, session ended, token refused, permission denied. */
  auth: 3,
  /** The server has no such thing (e.g. an unknown user id). */
  notFound: 4,
  /** The server refused the input: invalid fields, already exists, bad import lines. */
  invalid: 5,
  /** Try again later: unreachable, TLS handshake failed, unavailable, deadline exceeded, rate limited. */
  unavailable: 6,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** The exit-code table as printed by `switchboard --help`. */
export const EXIT_CODE_HELP = `Exit codes:
  0  success
  1  other error (internal server error, canceled, unexpected)
  2  usage error (bad option or argument, unreadable input file)
  3  authentication: not logged in, session ended ("log in again"), permission denied
  4  not found (e.g. \`get\` with an unknown id)
  5  invalid input: invalid fields, already exists, \`import\` lines that failed
  6  unavailable: cannot connect, TLS certificate not trusted, server unavailable,
     deadline exceeded, rate limited`;

/** A failure the CLI itself detected, with the exit code it means. */
export class CliError extends Error {
  override name = "CliError";
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue,
    /** What the user can do about it. */
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** A bad command line or unusable input file (exit 2). */
export class UsageError extends CliError {
  override name = "UsageError";
  constructor(message: string, hint?: string) {
    super(message, ExitCode.usage, hint);
  }
}

/** Not logged in, or the session is over (exit 3). */
export class AuthRequiredError extends CliError {
  override name = "AuthRequiredError";
  constructor(
    message: string,
    readonly reason?: string,
  ) {
    super(message, ExitCode.auth, "switchboard login <username>");
  }
}

/**
 * The CliError behind `error`, if any: connect wraps what an interceptor
 * throws (e.g. "log in again" from a failed refresh) into a ConnectError
 * whose `cause` it is.
 */
export function findCliError(error: unknown): CliError | undefined {
  const seen = new Set<unknown>();
  for (let e = error; e instanceof Error && !seen.has(e); e = e.cause) {
    if (e instanceof CliError) return e;
    seen.add(e);
  }
  return undefined;
}

/** The exit code for a typed RPC error. */
export function exitCodeFor(error: RpcError): ExitCodeValue {
  switch (error.kind) {
    case "unauthenticated":
    case "permission":
      return ExitCode.auth;
    case "not_found":
      return ExitCode.notFound;
    case "invalid":
    case "conflict":
      return ExitCode.invalid;
    case "unavailable":
    case "deadline":
    case "rate_limited":
      return ExitCode.unavailable;
    default:
      return ExitCode.other;
  }
}

/** The exit code for a google.rpc.Code number (import failures, chat frame errors). */
export function exitCodeForCode(code: number): ExitCodeValue {
  return exitCodeFor(toRpcError(new ConnectError("", code as Code)));
}

/** Node's error codes for a server certificate the client does not trust. */
const CERT_ERROR_CODES = new Set([
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

/** Node errors that mean the connection itself failed (no answer from the server). */
const CONNECTION_ERROR_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPROTO",
  "ERR_SSL_WRONG_VERSION_NUMBER",
  "ERR_HTTP2_SESSION_ERROR",
  "ERR_HTTP2_STREAM_ERROR",
  "ERR_HTTP2_GOAWAY_SESSION",
  "ERR_HTTP2_INVALID_SESSION",
  "ERR_HTTP2_ERROR",
  "ERR_STREAM_PREMATURE_CLOSE",
  "HPE_INVALID_CONSTANT",
  "UND_ERR_SOCKET",
]);

interface NodeErrorInfo {
  readonly code: string;
  readonly message: string;
}

/** The Node.js error codes along an error's `cause` chain. */
function nodeErrors(error: unknown): NodeErrorInfo[] {
  const found: NodeErrorInfo[] = [];
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current instanceof Error && !seen.has(current)) {
    seen.add(current);
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") found.push({ code, message: current.message });
    current = current.cause;
  }
  return found;
}

/** A TLS certificate verification failure along the cause chain, if any. */
export function certificateProblem(error: unknown): NodeErrorInfo | undefined {
  return nodeErrors(error).find((e) => CERT_ERROR_CODES.has(e.code));
}

/**
 * Whether the call failed in transport (connection refused, reset, TLS
 * mismatch, stream torn down) rather than with an answer from the server.
 */
export function isConnectionFailure(error: unknown): boolean {
  return nodeErrors(error).some(
    (e) => CONNECTION_ERROR_CODES.has(e.code) || e.code.startsWith("ERR_HTTP2_"),
  );
}

/**
 * Whether a streaming call that failed this way is worth reopening (watch,
 * chat): the server went away, the connection broke, or the server asked us
 * to come back later. Auth, input and certificate problems are not.
 */
export function isRetryable(error: unknown): boolean {
  if (findCliError(error)) return false;
  if (certificateProblem(error)) return false;
  const err = ConnectError.from(error);
  switch (err.code) {
    case Code.Unavailable:
    case Code.Aborted:
    case Code.ResourceExhausted:
    // A stream whose connection died (server killed, network cut) ends with
    // an HTTP/2 CANCEL; the CLI never cancels a stream it still reads.
    case Code.Canceled:
      return true;
    case Code.Internal:
    case Code.Unknown:
      return isConnectionFailure(error);
    default:
      return false;
  }
}

/** The error kind reported for a CLI-detected failure, by its exit code. */
const KIND_BY_EXIT_CODE: Record<ExitCodeValue, string> = {
  0: "ok",
  1: "other",
  2: "usage",
  3: "unauthenticated",
  4: "not_found",
  5: "invalid",
  6: "unavailable",
};

/** Everything printed about one error, as plain data (the `--json` shape). */
export interface ErrorReport {
  readonly kind: string;
  readonly code: string;
  readonly message: string;
  /** One line for people (shared/rpc-error.ts `summarize` for RPC errors). */
  readonly summary: string;
  readonly exitCode: ExitCodeValue;
  readonly hint?: string;
  readonly fieldViolations?: Readonly<Record<string, readonly string[]>>;
  readonly retryDelayMs?: number;
  readonly quotaViolations?: ReadonlyArray<{ subject: string; description: string }>;
  readonly reason?: string;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly requestId?: string;
}

/** Classifies anything thrown into an {@link ErrorReport}. */
export function describeError(error: unknown, context: { address?: string } = {}): ErrorReport {
  const cliError = findCliError(error);
  if (cliError) {
    error = cliError;
  }
  if (error instanceof CliError) {
    const kind = KIND_BY_EXIT_CODE[error.exitCode];
    return {
      kind,
      code: kind === "usage" || kind === "other" ? "cli" : kind,
      message: error.message,
      summary: error.message,
      exitCode: error.exitCode,
      ...(error.hint ? { hint: error.hint } : {}),
      ...(error instanceof AuthRequiredError && error.reason ? { reason: error.reason } : {}),
    };
  }
  const cert = certificateProblem(error);
  if (cert) {
    const message = `TLS: the server's certificate is not trusted (${cert.code}: ${cert.message})`;
    return {
      kind: "tls",
      code: "unavailable",
      message,
      summary: `unavailable: ${message}`,
      exitCode: ExitCode.unavailable,
      hint: "pass --ca <file> with the CA that signed the server's certificate (or, for a throwaway test only, --insecure)",
    };
  }
  if (!(error instanceof ConnectError) && isPlainError(error)) {
    return {
      kind: "other",
      code: "unknown",
      message: error.message,
      summary: error.message,
      exitCode: ExitCode.other,
    };
  }
  const rpc = toRpcError(error);
  const connection = rpc.kind !== "unavailable" && isConnectionFailure(error);
  const exitCode = connection ? ExitCode.unavailable : exitCodeFor(rpc);
  const where = context.address ? ` to ${context.address}` : "";
  let hint: string | undefined;
  if (connection || (rpc.kind === "unavailable" && isConnectionFailure(error))) {
    const codes = nodeErrors(error).map((e) => e.code);
    hint = codes.some((c) => c === "EPROTO" || c.startsWith("ERR_SSL"))
      ? `the connection${where} failed at the TLS layer: is the server speaking TLS (use --tls / https://) or not (drop --tls)?`
      : `cannot reach the server${where.replace(" to ", " at ")}; is it running, and is --addr right?`;
  } else if (rpc.kind === "unauthenticated") {
    hint =
      rpc.reason === "TOKEN_EXPIRED"
        ? "the access token has expired; log in again (or drop --token to use the stored, refreshable session)"
        : "log in again: switchboard login <username>";
  } else if (rpc.kind === "permission") {
    hint = "this call needs a role your user does not have";
  }
  return {
    kind: connection ? "unavailable" : rpc.kind,
    code: connection ? "unavailable" : rpc.codeName,
    message: rpc.message,
    summary: connection ? `unavailable: ${rpc.message}` : summarize(rpc),
    exitCode,
    ...(hint ? { hint } : {}),
    ...(Object.keys(rpc.fieldViolations).length ? { fieldViolations: rpc.fieldViolations } : {}),
    ...(rpc.retryDelayMs !== undefined ? { retryDelayMs: rpc.retryDelayMs } : {}),
    ...(rpc.quotaViolations.length ? { quotaViolations: rpc.quotaViolations } : {}),
    ...(rpc.reason ? { reason: rpc.reason } : {}),
    ...(Object.keys(rpc.metadata).length ? { metadata: rpc.metadata } : {}),
    ...(rpc.requestId ? { requestId: rpc.requestId } : {}),
  };
}

/** An Error that is not a ConnectError and not a Node transport error. */
function isPlainError(error: unknown): error is Error {
  return error instanceof Error && nodeErrors(error).length === 0;
}

/** Human-readable lines for an {@link ErrorReport}. */
export function formatErrorReport(report: ErrorReport): string[] {
  const lines = [`error: ${report.summary}`];
  for (const [field, problems] of Object.entries(report.fieldViolations ?? {})) {
    for (const problem of problems) lines.push(`  ${field}: ${problem}`);
  }
  for (const q of report.quotaViolations ?? [])
    lines.push(`  quota ${q.subject}: ${q.description}`);
  if (report.reason) lines.push(`  reason: ${report.reason}`);
  for (const [key, value] of Object.entries(report.metadata ?? {})) {
    lines.push(`  ${key}: ${value}`);
  }
  // summarize() already quotes the retry delay, and the request id of internal errors.
  if (report.requestId && !report.summary.includes(report.requestId)) {
    lines.push(`  request id: ${report.requestId}`);
  }
  if (report.hint) lines.push(`  hint: ${report.hint}`);
  return lines;
}
