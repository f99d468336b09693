import { performance } from "node:perf_hooks";
import { ConnectError, type Interceptor } from "@connectrpc/connect";
import { observeStream } from "./observe-stream.js";

/** The header (unary) or trailer (streams) carrying the handler's duration. */
export const SERVER_TIMING_HEADER = "server-timing";

/**
 * Reports how long the call spent inside this interceptor — the handler and
 * every interceptor inside it — as `server-timing: handler;dur=12.3`
 * (milliseconds, one decimal):
 * - unary calls: in the response header;
 * - streams: in the trailer only, measured to the end of the stream (the
 *   headers are committed with the first message, long before that);
 * - errors: in the `ConnectError`'s metadata (sent as headers on Connect
 *   unary calls, as trailers otherwise). On a stream failing mid-way the
 *   trailer is set as usual and goes out with the error.
 */
export function timingInterceptor(): Interceptor {
  return (next) => async (req) => {
    const start = performance.now();
    const timing = () => `handler;dur=${(performance.now() - start).toFixed(1)}`;
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      if (err instanceof ConnectError) err.metadata.set(SERVER_TIMING_HEADER, timing());
      throw err;
    }
    if (!res.stream) {
      res.header.set(SERVER_TIMING_HEADER, timing());
      return res;
    }
    const { trailer } = res;
    return {
      ...res,
      message: observeStream(res.message, {
        onEnd: () => trailer.set(SERVER_TIMING_HEADER, timing()),
      }),
    };
  };
}
