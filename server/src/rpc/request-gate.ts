import { type ContextValues, createContextKey, type Interceptor } from "@connectrpc/connect";
import { type Exchange, gone } from "./exchange.js";

/**
 * The request gate: the engine's unary drivers start THE interceptor chain
 * before they read a request body, and the body is read only when the call
 * reaches the gate — after the interceptors that need only headers (request
 * id, access log, call tracking, the error boundary, auth, rate limits). A
 * call those refuse never has its body read: an unauthenticated client
 * costs a header parse and a token check, not the buffering of its body
 * (HTTP/2 flow control and TCP hold the unread bytes back at the client).
 * Body errors (too large, malformed, a second message) are then raised
 * inside the chain, so they are logged and carry the request id like any
 * other failure — unlike connect's handlers, which read and parse the body
 * before any interceptor runs.
 */

/** Reads, decompresses and parses the call's unary request message (set by the driver). */
const kRequestBody = createContextKey<(() => Promise<unknown>) | undefined>(undefined, {
  description: "unary request body reader",
});

/**
 * The interceptor that stands where the body is read: replaces the
 * request's placeholder message with the parsed one. Calls whose driver did
 * not defer the body (streams, connect's handlers) pass through untouched.
 */
export const requestGate: Interceptor = (next) => async (req) => {
  if (req.stream) return next(req);
  const read = req.contextValues.get(kRequestBody);
  if (read === undefined) return next(req);
  return next({ ...req, message: (await read()) as typeof req.message });
};

/** `interceptors` with the gate after the first `gateAfter` of them (none: unchanged). */
export function withRequestGate(
  interceptors: readonly Interceptor[],
  gateAfter: number | undefined,
): Interceptor[] {
  if (gateAfter === undefined) return [...interceptors];
  return [...interceptors.slice(0, gateAfter), requestGate, ...interceptors.slice(gateAfter)];
}

/**
 * Defers a unary call's body to the gate: `read` (read, decompress, parse)
 * runs when the call reaches it, and fails if the exchange closes first.
 */
export function deferBody(values: ContextValues, x: Exchange, read: () => Promise<unknown>): void {
  values.set(
    kRequestBody,
    () =>
      new Promise((resolve, reject) => {
        x.onClose((reason) => reject(reason ?? gone()));
        read().then(resolve, reject);
      }),
  );
}
