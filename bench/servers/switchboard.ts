import http from "node:http";
import http2 from "node:http2";
import { pino } from "pino";
import { build } from "../../server/src/app.js";
import { loadConfig } from "../../server/src/config.js";
import { openStore, type Store } from "../../server/src/storage/index.js";
import { bump, type Counter, emit, serveControl } from "./control.js";

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
countResponses();

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

function countResponses(): void {
  const h2 = http2.Http2ServerResponse.prototype as unknown as {
    writeHead: WriteHead;
    addTrailers: (this: unknown, headers: Headers) => void;
  };
  const addTrailers = h2.addTrailers;
  h2.addTrailers = function (this: unknown, headers: Headers) {
    const status = headers["grpc-status"];
    if (status !== undefined) bump(grpcStatus, String(status));
    addTrailers.call(this, headers);
  };
  const h2WriteHead = h2.writeHead;
  h2.writeHead = function (this: unknown, status: number, ...rest: unknown[]) {
    bump(httpStatus, status);
    const headers = rest[rest.length - 1] as Headers | undefined;
    const grpc = headers && typeof headers === "object" ? headers["grpc-status"] : undefined;
    if (grpc !== undefined) bump(grpcStatusInHeaders, String(grpc));
    return h2WriteHead.call(this, status, ...rest);
  };
  const h1 = http.ServerResponse.prototype as unknown as { writeHead: WriteHead };
  const h1WriteHead = h1.writeHead;
  h1.writeHead = function (this: unknown, status: number, ...rest: unknown[]) {
    bump(httpStatus, status);
    return h1WriteHead.call(this, status, ...rest);
  };
}
