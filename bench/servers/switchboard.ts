import http from "node:http";
import http2 from "node:http2";
import { pino } from "pino";
import type { Store } from "../../server/src/storage/index.js";
import { bump, type Counter, emit, serveControl } from "./control.js";
import { build, loadConfig, openStore } from "./server-modules.js";

/**
 * The real Switchboard app for benchmarks: the production `build` with the
 * full interceptor chain (BENCH_INTERCEPTORS=full, the default) or none
 * (BENCH_INTERCEPTORS=none), configured from the environment exactly like
 * `server/src/main.ts`, logging silenced. Prints {"type":"ready","url":…}
 * once listening, then answers the runner on stdin (see control.ts).
 *
 * Bench-only counting, so the runner can check that every call of a load
 * run succeeded (h2load and wrk see HTTP statuses, not gRPC statuses):
 * - store.getUser results (found / missing): the handler ran and found the
 *   user, i.e. every layer before it (auth, rate limit, validation) let the
 *   call through;
 * - grpc-status values the server wrote (HTTP/2 trailers, or headers for a
 *   trailers-only answer) and HTTP statuses, by wrapping the two Node
 *   response methods connect-node calls. The cost is one function call per
 *   response.
 */

const interceptors = process.env.BENCH_INTERCEPTORS === "none" ? "none" : "full";

const getUser: Counter = {};
const grpcStatus: Counter = {};
const grpcStatusInHeaders: Counter = {};
const httpStatus: Counter = {};
await countResponses();

const config = loadConfig(process.env);
const store = countGetUser(
  await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl }),
);
const app = await build(config, { store, logger: pino({ level: "silent" }), interceptors });
const url = await app.listen();
emit({ type: "ready", url, pid: process.pid, interceptors });

serveControl({
  counters: () => ({
    getUser,
    grpcStatus,
    grpcStatusInHeaders,
    httpStatus,
    openStreams: app.calls.openStreams(),
    connections: app.listener.connectionCount(),
  }),
  stop: () => app.shutdown(),
});

/** Counts what store.getUser returns (the same store object, one method wrapped). */
function countGetUser(inner: Store): Store {
  const original = inner.getUser.bind(inner);
  inner.getUser = (id, options) =>
    original(id, options).then((record) => {
      bump(getUser, record ? "found" : "missing");
      return record;
    });
  return inner;
}

type Headers = Record<string, unknown>;
type WriteHead = (this: unknown, status: number, ...rest: unknown[]) => unknown;
type StreamMethods = {
  respond: (this: unknown, headers?: Headers, ...rest: unknown[]) => unknown;
  sendTrailers: (this: unknown, headers: Headers) => unknown;
};

/**
 * Counts every response at the HTTP/2 stream (`respond`, `sendTrailers`),
 * which both the compat layer (connect's handlers) and the gRPC unary fast
 * path write through, and at the HTTP/1.1 `writeHead`.
 */
async function countResponses(): Promise<void> {
  const h2 = (await serverStreamPrototype()) as StreamMethods;
  const respond = h2.respond;
  h2.respond = function (this: unknown, headers?: Headers, ...rest: unknown[]) {
    bump(httpStatus, String(headers?.[":status"] ?? 200));
    const grpc = headers?.["grpc-status"];
    if (grpc !== undefined) bump(grpcStatusInHeaders, String(grpc));
    return respond.call(this, headers, ...rest);
  };
  const sendTrailers = h2.sendTrailers;
  h2.sendTrailers = function (this: unknown, headers: Headers) {
    const status = headers["grpc-status"];
    if (status !== undefined) bump(grpcStatus, String(status));
    return sendTrailers.call(this, headers);
  };
  const h1 = http.ServerResponse.prototype as unknown as { writeHead: WriteHead };
  const h1WriteHead = h1.writeHead;
  h1.writeHead = function (this: unknown, status: number, ...rest: unknown[]) {
    bump(httpStatus, status);
    return h1WriteHead.call(this, status, ...rest);
  };
}

/** node:http2 does not export ServerHttp2Stream; one loopback request yields its prototype. */
async function serverStreamPrototype(): Promise<object> {
  const server = http2.createServer();
  const proto = new Promise<object>((resolve) => {
    server.once("stream", (stream) => {
      resolve(Object.getPrototypeOf(stream) as object);
      stream.respond({ ":status": 204 });
      stream.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as import("node:net").AddressInfo;
  const client = http2.connect(`http://127.0.0.1:${port}`);
  client.request({ ":path": "/" }).resume().end();
  const result = await proto;
  client.close();
  server.close();
  return result;
}
