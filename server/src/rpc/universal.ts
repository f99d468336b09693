import type { ContextValues } from "@connectrpc/connect";
import type { UniversalServerRequest, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { parseTimeout as parseConnectTimeout } from "@connectrpc/connect/protocol-connect";
import { parseTimeout as parseGrpcTimeout } from "@connectrpc/connect/protocol-grpc";
import type { Logger } from "pino";
import { MAX_TIMER_MS } from "./call.js";
import { type Exchange, gone } from "./exchange.js";
import { FastHeaders } from "./headers.js";
import type { Route } from "./route-table.js";

/**
 * The universal driver: serves any call — every protocol, call kind and
 * codec — with connect's own protocol handler for the method (what
 * connect-node and connect-fastify run), over the engine's `Exchange`
 * instead of connect-node's adapter. What the exchange adds over that
 * adapter:
 *
 * - a response write waiting for `drain` also ends when the exchange closes
 *   (connect-node waits for `drain` or `error` only, and a response closed
 *   under backpressure emits neither: the call, its stream slot and its log
 *   line were never released);
 * - request bytes count against the connection's and the process's
 *   `BodyBudget` while a unary body is being read;
 * - a unary answer is written in one go (headers, body, trailers);
 * - a deadline beyond Node's timer range is served as no deadline (connect
 *   would set an overflowing timer, which Node fires after 1 ms).
 */

/** The deadline headers and connect's parser of each (no upper limit: only the length matters here). */
const TIMEOUT_HEADERS = [
  ["grpc-timeout", parseGrpcTimeout],
  ["connect-timeout-ms", parseConnectTimeout],
] as const;

/** Serves one call through connect's handler for `route`. */
export async function serveUniversal(
  route: Route,
  x: Exchange,
  url: string,
  contextValues: ContextValues,
  logger: Logger,
): Promise<void> {
  const controller = new AbortController();
  x.onClose((reason) => controller.abort(reason));
  const header = FastHeaders.fromNode(x.headers);
  for (const [name, parse] of TIMEOUT_HEADERS) {
    const { timeoutMs } = parse(header.get(name), Number.MAX_SAFE_INTEGER);
    if (timeoutMs !== undefined && timeoutMs > MAX_TIMER_MS) header.delete(name);
  }
  const unary = route.method.methodKind === "unary";
  const request: UniversalServerRequest = {
    httpVersion: x.httpVersion,
    method: x.method,
    url,
    header,
    body: readBody(x, unary),
    signal: controller.signal,
    contextValues,
  };
  let response: UniversalServerResponse;
  try {
    response = await route.handler(request);
  } catch (err) {
    // connect's handlers answer every protocol error themselves; this is a
    // bug in one of them.
    logger.error({ err, procedure: route.path }, "rpc handler failed");
    x.reset();
    return;
  }
  await writeResponse(response, x, unary);
}

/**
 * The request body as connect's handlers read it. For unary calls the bytes
 * count against the connection's (and the process's) budget until the body
 * has been read; over budget, the read fails with ResourceExhausted, which
 * the protocol handler answers as it answers any body error.
 */
async function* readBody(x: Exchange, budgeted: boolean): AsyncGenerator<Uint8Array> {
  let held = 0;
  try {
    // Not `for await (… of x.body)`: leaving that loop early (connect stops
    // reading after a bad message) destroys the stream, which resets it
    // before the answer is written.
    for await (const chunk of x.body.iterator({ destroyOnReturn: false })) {
      const bytes = chunk as Buffer;
      if (budgeted) {
        x.budget.take(bytes.byteLength);
        held += bytes.byteLength;
      }
      yield bytes;
    }
  } finally {
    if (held > 0) x.budget.give(held);
  }
}

/**
 * Writes connect's answer (connect-node's `universalResponseToNodeResponse`,
 * with the differences above). A write that fails because the client is
 * gone is reported to the handler (its iterator's `throw`), so the call
 * ends and everything it holds is released.
 */
async function writeResponse(
  response: UniversalServerResponse,
  x: Exchange,
  unary: boolean,
): Promise<void> {
  const header = response.header ?? new Headers();
  const trailer = response.trailer;
  const it = response.body?.[Symbol.asyncIterator]();
  let writing = false;
  try {
    if (it === undefined) {
      x.respond(response.status, header, trailer !== undefined);
      x.end(undefined, trailer);
      return;
    }
    let chunk = await it.next();
    if (unary) {
      const chunks: Uint8Array[] = [];
      for (; chunk.done !== true; chunk = await it.next()) chunks.push(chunk.value);
      if (!x.writable) return;
      x.respond(response.status, header, trailer !== undefined);
      x.end(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), trailer);
      return;
    }
    if (!x.writable) throw gone();
    x.respond(response.status, header, trailer !== undefined);
    for (; chunk.done !== true; chunk = await it.next()) {
      writing = true;
      await x.write(chunk.value);
      writing = false;
    }
    x.end(undefined, trailer);
  } catch (err) {
    if (writing) it?.throw?.(err).catch(() => undefined);
    if (x.writable) x.reset();
  } finally {
    it?.return?.().catch(() => undefined);
  }
}
