import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { ERROR_DOMAIN } from "../errors.js";

/**
 * The chat's typed errors (same conventions as `../errors.ts`: a standard
 * code plus `google.rpc` details clients act on).
 */

/** `google.rpc.ErrorInfo` reasons the chat sends. */
export const ChatReason = {
  /**
   * A subscriber fell more than the configured buffer behind and was cut
   * off; metadata `last_id` is the last message id it was given, to resume
   * from with `after_id`.
   */
  SUBSCRIBER_TOO_SLOW: "SUBSCRIBER_TOO_SLOW",
} as const;
export type ChatReason = (typeof ChatReason)[keyof typeof ChatReason];

/**
 * ResourceExhausted with ErrorInfo reason SUBSCRIBER_TOO_SLOW. `metadata`
 * carries at least `last_id` (a decimal message id); the bidi Chat call adds
 * `last_id_<room>` per joined room.
 */
export function subscriberTooSlow(metadata: Record<string, string>): ConnectError {
  return new ConnectError(
    "subscriber fell too far behind; resubscribe with after_id = last_id",
    Code.ResourceExhausted,
    undefined,
    [
      {
        desc: ErrorInfoSchema,
        value: create(ErrorInfoSchema, {
          reason: ChatReason.SUBSCRIBER_TOO_SLOW,
          domain: ERROR_DOMAIN,
          metadata,
        }),
      },
    ],
  );
}

/** Unavailable: the hub was closed (server shutdown); clients resume elsewhere. */
export function hubClosed(): ConnectError {
  return new ConnectError("server is shutting down", Code.Unavailable);
}

/** True when `err` is a ConnectError with ErrorInfo `reason` (in our domain). */
export function hasReason(err: unknown, reason: string): boolean {
  return (
    err instanceof ConnectError &&
    err.findDetails(ErrorInfoSchema).some((d) => d.reason === reason && d.domain === ERROR_DOMAIN)
  );
}
