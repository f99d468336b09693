import { randomUUID } from "node:crypto";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { CallLogger, kLogger, kRequestId } from "../context.js";
import { observeStream } from "./observe-stream.js";
import { procedureOf } from "./procedure.js";

/** The header (and, on streams, trailer) that carries a call's request id. */
export const REQUEST_ID_HEADER = "x-request-id";

/** What a caller may choose as its own request id; anything else is replaced. */
const SANE_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Gives every call a request id and a logger bound to it.
 *
 * The id is the caller's `x-request-id` when that is sane (1–128 characters
 * of `[A-Za-z0-9._:-]`), so a trace can span a proxy or another service;
 * otherwise (absent, too long, odd characters, several values) a fresh UUID —
 * a bad id never fails the call. It is stored as `kRequestId`, and `kLogger`
 * becomes `baseLogger.child({ requestId, procedure })` (made on first use)
 * for everything inside.
 *
 * The id goes back to the caller exactly once per place a client looks
 * (Connect clients merge headers and trailers into an error's metadata, so
 * a value in both would read "id, id"):
 * - unary success: response header `x-request-id`;
 * - stream success: response header and trailer. The header is set before
 *   the first message (headers go out with it and are final from then on)
 *   and is sent even when the stream fails before any message;
 * - stream failing after it started: the header already carries the id, so
 *   the trailer drops it and the error does not get it (an id in the error
 *   metadata would be appended to the trailers);
 * - unary error, or a stream failing before it started (e.g. rejected by
 *   an inner interceptor): no response headers exist yet, so the id goes
 *   into the `ConnectError`'s metadata, which every protocol sends (Connect
 *   unary as headers, gRPC / gRPC-Web and Connect streams as trailers).
 * Clients find it in `onHeader` / `onTrailer` on success and in
 * `err.metadata.get("x-request-id")` on failure. A foreign `x-request-id` in
 * an error's metadata (e.g. copied from a failed downstream call) is
 * replaced or removed, so the caller only ever sees this call's id.
 *
 * Only `ConnectError`s are tagged: put this interceptor outside the error
 * boundary, which turns everything else into one.
 */
export function requestIdInterceptor(baseLogger: Logger): Interceptor {
  return (next) => async (req) => {
    const offered = req.header.get(REQUEST_ID_HEADER);
    const requestId = offered !== null && SANE_REQUEST_ID.test(offered) ? offered : randomUUID();
    const procedure = procedureOf(req);
    req.contextValues.set(kRequestId, requestId);
    req.contextValues.set(kLogger, new CallLogger(baseLogger, { requestId, procedure }));

    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      throw tagged(err, requestId);
    }
    // Set now, before the first message is yielded: headers are committed
    // to the wire with the first response message and cannot change later.
    res.header.set(REQUEST_ID_HEADER, requestId);
    if (!res.stream) return res;
    const { trailer } = res;
    trailer.set(REQUEST_ID_HEADER, requestId);
    return {
      ...res,
      message: observeStream(res.message, {
        onError(err) {
          // The header has it; the trailer and the error metadata (which
          // gRPC and Connect append to the trailers) must not repeat it.
          trailer.delete(REQUEST_ID_HEADER);
          if (err instanceof ConnectError) err.metadata.delete(REQUEST_ID_HEADER);
          return err;
        },
      }),
    };
  };
}

/** Adds the request id to a ConnectError's metadata (replacing any other); leaves other errors alone. */
function tagged(err: unknown, requestId: string): unknown {
  if (err instanceof ConnectError) err.metadata.set(REQUEST_ID_HEADER, requestId);
  return err;
}
