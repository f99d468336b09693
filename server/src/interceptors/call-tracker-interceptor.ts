import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { observeStream } from "./observe-stream.js";

/** Counts calls in flight and caps open streams; see `createCallTracker`. */
export interface CallTracker {
  readonly interceptor: Interceptor;
  /** Streaming calls (server, client, bidi) open now. */
  openStreams(): number;
  /** Unary calls in flight now. */
  unaryInFlight(): number;
  /** Resolves once no unary call is in flight (at once if none is). */
  whenUnaryIdle(): Promise<void>;
}

/**
 * Tracks calls for graceful shutdown and caps open streams.
 *
 * Shutdown lets in-flight unary calls finish before it ends long-lived
 * streams, so it needs to know when unary calls have drained. Long-lived
 * streams hold memory and a file descriptor each; past `maxOpenStreams` a new
 * stream fails fast with ResourceExhausted instead of degrading everyone.
 * Unary calls are not capped here: HTTP/2's per-connection stream limit
 * already bounds them.
 */
export function createCallTracker(maxOpenStreams: number): CallTracker {
  let streams = 0;
  let unary = 0;
  let idleWaiters: Array<() => void> = [];
  const unaryDone = () => {
    unary--;
    if (unary === 0) {
      for (const wake of idleWaiters) wake();
      idleWaiters = [];
    }
  };

  const interceptor: Interceptor = (next) => async (req) => {
    if (req.method.methodKind === "unary") {
      unary++;
      try {
        return await next(req);
      } finally {
        unaryDone();
      }
    }
    if (streams >= maxOpenStreams) {
      throw new ConnectError(
        `too many open streams on this server (limit ${maxOpenStreams}); retry later`,
        Code.ResourceExhausted,
      );
    }
    streams++;
    let released = false;
    const release = () => {
      if (!released) {
        released = true;
        streams--;
      }
    };
    try {
      const res = await next(req);
      if (!res.stream) {
        release();
        return res;
      }
      return { ...res, message: observeStream(res.message, { onEnd: release }) };
    } catch (err) {
      release();
      throw err;
    }
  };

  return {
    interceptor,
    openStreams: () => streams,
    unaryInFlight: () => unary,
    whenUnaryIdle: () =>
      unary === 0 ? Promise.resolve() : new Promise<void>((resolve) => idleWaiters.push(resolve)),
  };
}
