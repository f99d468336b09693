import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  BadRequest_FieldViolationSchema,
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";

/**
 * The error catalogue: small factories for every typed error Switchboard
 * sends. Handlers and adapters throw only what these return, so clients can
 * rely on codes, reasons and details.
 */

/** The `google.rpc.ErrorInfo` domain of every reason Switchboard sends. */
export const ERROR_DOMAIN = "switchboard.dev";

/** Reasons carried in `google.rpc.ErrorInfo`. */
export const Reason = {
  USERNAME_TAKEN: "USERNAME_TAKEN",
  EMAIL_TAKEN: "EMAIL_TAKEN",
  /** The call needs an access token and none was sent. */
  TOKEN_MISSING: "TOKEN_MISSING",
  /** The access token was valid but has expired: refresh it. */
  TOKEN_EXPIRED: "TOKEN_EXPIRED",
  /** The access token is malformed, forged, or not meant for this server. */
  TOKEN_INVALID: "TOKEN_INVALID",
  /** The access token's session was ended (Logout, refresh-token theft): log in again. */
  TOKEN_REVOKED: "TOKEN_REVOKED",
  /** The refresh token is unknown or its session was ended (e.g. by Logout). */
  REFRESH_TOKEN_INVALID: "REFRESH_TOKEN_INVALID",
  /** The refresh token's session has expired: log in again. */
  REFRESH_TOKEN_EXPIRED: "REFRESH_TOKEN_EXPIRED",
  /** An already used refresh token was presented again; its whole login was revoked. */
  REFRESH_TOKEN_REUSED: "REFRESH_TOKEN_REUSED",
  /** Wrong username/email or password (deliberately not saying which). */
  INVALID_CREDENTIALS: "INVALID_CREDENTIALS",
  /** The caller is authenticated but lacks a role the call requires. */
  ROLE_REQUIRED: "ROLE_REQUIRED",
} as const;
export type Reason = (typeof Reason)[keyof typeof Reason];

/** One bad field of a request. */
export interface FieldViolation {
  /** Path of the field, e.g. `username` or `ids[3]`. */
  readonly field: string;
  readonly description: string;
}

/** InvalidArgument carrying a `google.rpc.BadRequest` with every violation. */
export function invalidArgument(violations: readonly FieldViolation[]): ConnectError {
  const summary = violations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return new ConnectError(summary || "invalid request", Code.InvalidArgument, undefined, [
    {
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: violations.map((v) =>
          create(BadRequest_FieldViolationSchema, { field: v.field, description: v.description }),
        ),
      }),
    },
  ]);
}

/** AlreadyExists carrying a `google.rpc.ErrorInfo` with the given reason. */
export function alreadyExists(
  reason: Reason,
  message: string,
  metadata: Record<string, string> = {},
  cause?: unknown,
): ConnectError {
  return new ConnectError(
    message,
    Code.AlreadyExists,
    undefined,
    [
      {
        desc: ErrorInfoSchema,
        value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }),
      },
    ],
    cause,
  );
}

/**
 * Unauthenticated carrying a `google.rpc.ErrorInfo` with the given reason.
 * `cause` (e.g. the JWT library's error) goes to the log only, never into the
 * message the client sees.
 */
export function unauthenticated(reason: Reason, message: string, cause?: unknown): ConnectError {
  return new ConnectError(
    message,
    Code.Unauthenticated,
    undefined,
    [
      {
        desc: ErrorInfoSchema,
        value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN }),
      },
    ],
    cause,
  );
}

/** PermissionDenied carrying a `google.rpc.ErrorInfo` with the given reason and metadata. */
export function permissionDenied(
  reason: Reason,
  message: string,
  metadata: Record<string, string> = {},
): ConnectError {
  return new ConnectError(message, Code.PermissionDenied, undefined, [
    {
      desc: ErrorInfoSchema,
      value: create(ErrorInfoSchema, { reason, domain: ERROR_DOMAIN, metadata }),
    },
  ]);
}

/** NotFound for a named resource. */
export function notFound(what: string): ConnectError {
  return new ConnectError(`${what} not found`, Code.NotFound);
}

/**
 * FailedPrecondition without detail, e.g. a row refers to one that no longer
 * exists; `cause` goes to the log only.
 */
export function failedPrecondition(message: string, cause?: unknown): ConnectError {
  return new ConnectError(message, Code.FailedPrecondition, undefined, undefined, cause);
}

/**
 * Unavailable, e.g. the database cannot be reached; `cause` goes to the log
 * only. With `retryAfterMs`, a `google.rpc.RetryInfo` tells the client when a
 * retry is worth it.
 */
export function unavailable(message: string, cause?: unknown, retryAfterMs?: number): ConnectError {
  const details =
    retryAfterMs === undefined
      ? undefined
      : [
          {
            desc: RetryInfoSchema,
            value: create(RetryInfoSchema, {
              retryDelay: durationFromMs(Math.max(0, Math.ceil(retryAfterMs))),
            }),
          },
        ];
  return new ConnectError(message, Code.Unavailable, undefined, details, cause);
}

/** Internal with no detail for the caller; `cause` goes to the log only. */
export function internal(cause?: unknown): ConnectError {
  return new ConnectError("internal error", Code.Internal, undefined, undefined, cause);
}
