import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import {
  QuotaFailure_ViolationSchema,
  QuotaFailureSchema,
} from "../../../gen/google/rpc/error_details_pb.js";
import { kAuth, kPeer } from "../context.js";
import { observeStream } from "./observe-stream.js";

/** How many streams one caller may hold open at once. */
export interface StreamQuotas {
  /** Per authenticated user (all their connections and devices together). */
  readonly perUser: number;
  /** Per client IP for calls without a user (health Watch, reflection). */
  readonly perAnonymousIp: number;
}

/**
 * Caps the streaming calls each caller holds open, below the process-wide
 * cap (MAX_OPEN_STREAMS, the call tracker): without it, anonymous clients
 * opening public streams (health `Watch`, reflection) from a few IPs could
 * take every slot and lock logged-in users out. Counted per user id for
 * authenticated calls and per client IP for anonymous ones; over a quota a
 * new stream fails with ResourceExhausted and a `google.rpc.QuotaFailure`
 * naming it (`streams:user:<id>` or `streams:ip:<ip>`). Auth must run
 * before (outside) this interceptor. Unary calls are not counted.
 */
export function streamQuotaInterceptor(quotas: StreamQuotas): Interceptor {
  const open = new Map<string, number>();
  const release = (key: string) => {
    const n = (open.get(key) ?? 1) - 1;
    if (n <= 0) open.delete(key);
    else open.set(key, n);
  };
  return (next) => async (req) => {
    if (req.method.methodKind === "unary") return next(req);
    const auth = req.contextValues.get(kAuth);
    const key =
      auth !== undefined ? `user:${auth.userId}` : `ip:${req.contextValues.get(kPeer).ip}`;
    const limit = auth !== undefined ? quotas.perUser : quotas.perAnonymousIp;
    const count = open.get(key) ?? 0;
    if (count >= limit) {
      const description = `at most ${limit} open streams per ${auth !== undefined ? "user" : "anonymous client IP"}`;
      throw new ConnectError(
        `too many open streams (${description}); close one or retry later`,
        Code.ResourceExhausted,
        undefined,
        [
          {
            desc: QuotaFailureSchema,
            value: create(QuotaFailureSchema, {
              violations: [
                create(QuotaFailure_ViolationSchema, { subject: `streams:${key}`, description }),
              ],
            }),
          },
        ],
      );
    }
    open.set(key, count + 1);
    let released = false;
    const done = () => {
      if (!released) {
        released = true;
        release(key);
      }
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        done();
        return res;
      }
      return { ...res, message: observeStream(res.message, { onEnd: done }) };
    } catch (err) {
      done();
      throw err;
    }
  };
}
