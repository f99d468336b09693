import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  RetryInfoSchema,
} from "../gen/google/rpc/error_details_pb.js";

/**
 * Client-side view of any error from a Switchboard call, shared by the web
 * app and the CLI. It turns a ConnectError (from any of the three
 * protocols) into plain data a UI can render: which field is wrong, how long
 * to wait, whether to refresh a token, and which request id to quote.
 */

/** What a client should do about an error, coarsely. */
export type ErrorKind =
  | "invalid" // fix the input (see fieldViolations)
  | "conflict" // already exists (see reason)
  | "unauthenticated" // log in again, or refresh (see reason)
  | "permission" // not allowed for this user
  | "not_found"
  | "rate_limited" // wait retryDelayMs
  | "unavailable" // retry / reconnect
  | "deadline"
  | "canceled"
  | "internal" // quote requestId to support
  | "other";

/** A typed error. */
export interface RpcError {
  readonly kind: ErrorKind;
  readonly code: Code;
  /** The code as written on the wire by the Connect protocol, e.g. `invalid_argument`. */
  readonly codeName: string;
  /** The server's message, without the `[code]` prefix. */
  readonly message: string;
  /** Field violations by field path (`username`, `ids[2]`), in the server's order. */
  readonly fieldViolations: Readonly<Record<string, readonly string[]>>;
  /** From `google.rpc.RetryInfo`. */
  readonly retryDelayMs: number | undefined;
  /** From `google.rpc.QuotaFailure`. */
  readonly quotaViolations: ReadonlyArray<{
    readonly subject: string;
    readonly description: string;
  }>;
  /** From `google.rpc.ErrorInfo`: e.g. USERNAME_TAKEN, TOKEN_EXPIRED. */
  readonly reason: string | undefined;
  readonly metadata: Readonly<Record<string, string>>;
  /** From `google.rpc.RequestInfo` or the `x-request-id` header/trailer. */
  readonly requestId: string | undefined;
}

const KIND_BY_CODE: Partial<Record<Code, ErrorKind>> = {
  [Code.InvalidArgument]: "invalid",
  [Code.OutOfRange]: "invalid",
  [Code.FailedPrecondition]: "invalid",
  [Code.AlreadyExists]: "conflict",
  [Code.Aborted]: "conflict",
  [Code.Unauthenticated]: "unauthenticated",
  [Code.PermissionDenied]: "permission",
  [Code.NotFound]: "not_found",
  [Code.ResourceExhausted]: "rate_limited",
  [Code.Unavailable]: "unavailable",
  [Code.DeadlineExceeded]: "deadline",
  [Code.Canceled]: "canceled",
  [Code.Internal]: "internal",
  [Code.Unknown]: "internal",
  [Code.DataLoss]: "internal",
};

/** Snake-case code name as the Connect protocol writes it (`already_exists`). */
export function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i === 0 ? c : `_${c}`)).toLowerCase();
}

/** Turns anything a call may throw into an `RpcError`. */
export function toRpcError(error: unknown): RpcError {
  const err = ConnectError.from(error);
  const fieldViolations: Record<string, string[]> = {};
  for (const badRequest of err.findDetails(BadRequestSchema)) {
    for (const v of badRequest.fieldViolations) {
      const list = fieldViolations[v.field] ?? [];
      list.push(v.description);
      fieldViolations[v.field] = list;
    }
  }
  const retry = err.findDetails(RetryInfoSchema)[0];
  const info = err.findDetails(ErrorInfoSchema)[0];
  const requestInfo = err.findDetails(RequestInfoSchema)[0];
  const requestId = requestInfo?.requestId || err.metadata.get("x-request-id") || undefined;
  // A resource-exhausted error without RetryInfo (e.g. too many open
  // streams) is still worth retrying, but without a countdown.
  const kind =
    err.code === Code.ResourceExhausted && !retry && !err.findDetails(QuotaFailureSchema).length
      ? "unavailable"
      : (KIND_BY_CODE[err.code] ?? "other");
  return {
    kind,
    code: err.code,
    codeName: codeName(err.code),
    message: err.rawMessage,
    fieldViolations,
    retryDelayMs: retry?.retryDelay ? durationMs(retry.retryDelay) : undefined,
    quotaViolations: err
      .findDetails(QuotaFailureSchema)
      .flatMap((q) =>
        q.violations.map((v) => ({ subject: v.subject, description: v.description })),
      ),
    reason: info?.reason || undefined,
    metadata: { ...(info?.metadata ?? {}) },
    requestId,
  };
}

/** Whether a client holding a refresh token should refresh and retry once. */
export function shouldRefresh(error: RpcError): boolean {
  return error.kind === "unauthenticated" && error.reason === "TOKEN_EXPIRED";
}

/** A one-line summary for people (CLI output, toasts). */
export function summarize(error: RpcError): string {
  const parts = [`${error.codeName}: ${error.message}`];
  if (error.retryDelayMs !== undefined) {
    parts.push(`retry in ${Math.ceil(error.retryDelayMs / 1000)} s`);
  }
  if (error.kind === "internal" && error.requestId) parts.push(`request id ${error.requestId}`);
  return parts.join(" — ");
}
