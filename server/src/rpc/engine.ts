import type http from "node:http";
import type http2 from "node:http2";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  type ContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  errorToJsonBytes,
  parseContentType as parseConnectContentType,
} from "@connectrpc/connect/protocol-connect";
import { parseContentType as parseGrpcContentType } from "@connectrpc/connect/protocol-grpc";
import { parseContentType as parseGrpcWebContentType } from "@connectrpc/connect/protocol-grpc-web";
import type { Logger } from "pino";
import type { Peer } from "../context.js";
import { BodyBudget } from "./body-budget.js";
import { header } from "./call.js";
import { serveConnectUnary } from "./connect-unary.js";
import { type Exchange, Http1Exchange, Http2Exchange } from "./exchange.js";
import { serveGrpcServerStream } from "./grpc-server-stream.js";
import { serveGrpcUnary } from "./grpc-unary.js";
import type { Http1Handler, StreamHandler } from "./listener.js";
import { withRequestGate } from "./request-gate.js";
import { buildRouteTable, type Route, type RouteOptions } from "./route-table.js";
import type { Serving } from "./serving.js";
import { serveUniversal } from "./universal.js";

/** connect's default `compressMinBytes`: smaller responses are sent uncompressed. */
export const DEFAULT_COMPRESS_MIN_BYTES = 1024;

/** Options of the engine: those of connect's handlers, plus what the engine adds. */
export interface EngineOptions {
  /** The same function connect-fastify is given. */
  readonly routes: (router: ConnectRouter) => void;
  readonly interceptors: readonly Interceptor[];
  /**
   * How many of `interceptors` (the outermost) need only the request
   * headers: the unary drivers run them before reading the body, which is
   * read at the request gate (request-gate.ts). Default 0: the body is read
   * before any interceptor, as connect does.
   */
  readonly requestGateAfter?: number;
  /** The context values of a call, from where it came from. */
  readonly contextValues: (peer: Peer) => ContextValues;
  readonly acceptCompression: readonly Compression[];
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  readonly compressMinBytes?: number;
  readonly maxTimeoutMs?: number;
  readonly jsonOptions?: RouteOptions["jsonOptions"];
  readonly binaryOptions?: RouteOptions["binaryOptions"];
  readonly requireConnectProtocolHeader?: boolean;
  /** Aborted when shutdown ends the calls still open. */
  readonly shutdownSignal: AbortSignal;
  /** Request-body bytes being read at once, per connection and for the process. */
  readonly bodyBudget: { readonly perConnection: number; readonly total: number };
  readonly logger: Logger;
}

/** The engine as the listener calls it. */
export interface Engine {
  /** Takes an HTTP/2 stream to a served method (true), or leaves it (false). */
  readonly stream: StreamHandler;
  /** Takes an HTTP/1.x request to a served method (true), or leaves it (false). */
  readonly http1: Http1Handler;
  /** Stops taking calls: from now on every request is left to the fallback. */
  drain(): void;
  /** Bytes of request bodies being read now, in the whole process. */
  bufferedBodyBytes(): number;
}

/**
 * A host, IPv4 address or bracketed IPv6 address, with an optional port:
 * what an `:authority` or `Host` may hold (RFC 3986 reg-name characters).
 */
const AUTHORITY = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?$/;

/** base64 or base64url, padded or not: what a Connect GET's `message` may hold with `base64=1`. */
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * What is wrong with a Connect GET's query that connect's handler would
 * turn into a masked Internal error (its base64 decoder throws a plain
 * Error): undefined when nothing is.
 */
function getQueryProblem(path: string): string | undefined {
  const q = path.indexOf("?");
  if (q < 0) return undefined;
  const query = new URLSearchParams(path.slice(q + 1));
  if (query.get("base64") === "1" && !BASE64.test(query.get("message") ?? "")) {
    return "protocol error: the message query parameter is not valid base64";
  }
  return undefined;
}

/**
 * THE protocol engine: serves every method of `options.routes` in every
 * protocol (gRPC, gRPC-Web, Connect), call kind and HTTP version, straight
 * from Node's HTTP/2 streams and HTTP/1.x requests (see README.md here).
 */
export function createEngine(options: EngineOptions): Engine {
  const serving: Serving = {
    readMaxBytes: options.readMaxBytes,
    writeMaxBytes: options.writeMaxBytes,
    compressMinBytes: options.compressMinBytes ?? DEFAULT_COMPRESS_MIN_BYTES,
    maxTimeoutMs: options.maxTimeoutMs ?? Number.MAX_SAFE_INTEGER,
    acceptCompression: [...options.acceptCompression],
    interceptors: withRequestGate(options.interceptors, options.requestGateAfter ?? 0),
    shutdownSignal: options.shutdownSignal,
  };
  const routes = buildRouteTable(options.routes, {
    ...serving,
    // connect's handlers read the body before any interceptor; the gate
    // would find nothing to read there.
    interceptors: [...options.interceptors],
    jsonOptions: options.jsonOptions,
    binaryOptions: options.binaryOptions,
    requireConnectProtocolHeader: options.requireConnectProtocolHeader ?? false,
  });
  const requireConnectHeader = options.requireConnectProtocolHeader === true;
  const { logger } = options;
  const processBudget = new BodyBudget(options.bodyBudget.total, "server");
  const connectionBudgets = new WeakMap<object, BodyBudget>();
  const budgetOf = (connection: object) => {
    let budget = connectionBudgets.get(connection);
    if (budget === undefined) {
      budget = new BodyBudget(options.bodyBudget.perConnection, "connection", processBudget);
      connectionBudgets.set(connection, budget);
    }
    return budget;
  };
  let draining = false;

  const serve = (x: Exchange, route: Route) => {
    const authority = x.authority;
    if (authority === undefined || !AUTHORITY.test(authority)) {
      badRequest(x, authority === undefined ? "missing host" : "invalid host");
      return;
    }
    const url = `${x.encrypted ? "https" : "http"}://${authority}${x.path}`;
    const values = options.contextValues(x.peer);
    if (x.method === "POST") {
      const contentType = header(x.headers, "content-type");
      const grpc = x instanceof Http2Exchange && parseGrpcContentType(contentType)?.binary === true;
      const { unary, serverStream } = route;
      if (unary !== undefined) {
        if (grpc) return serveGrpcUnary(serving, unary, x, url, values, false);
        const grpcWeb = parseGrpcWebContentType(contentType);
        if (grpcWeb?.binary === true && !grpcWeb.text) {
          return serveGrpcUnary(serving, unary, x, url, values, true);
        }
        const connect = parseConnectContentType(contentType);
        if (connect !== undefined && !connect.stream && !requireConnectHeader) {
          return serveConnectUnary(serving, unary, connect.binary, x, url, values);
        }
      } else if (serverStream !== undefined && grpc && x instanceof Http2Exchange) {
        return serveGrpcServerStream(serving, serverStream, x.body, x.headers, url, values);
      }
    }
    if (x.method === "GET") {
      const problem = getQueryProblem(x.path);
      if (problem !== undefined) {
        logger.info({ peer: x.peer.ip, procedure: route.path, code: "invalid_argument" }, problem);
        answerConnectError(x, new ConnectError(problem, Code.InvalidArgument));
        return;
      }
    }
    serveUniversal(route, x, url, values, logger).catch((err: unknown) => {
      logger.error({ err, procedure: route.path }, "rpc call failed in the engine");
      if (x.writable) x.reset();
    });
  };

  const badRequest = (x: Exchange, why: string) => {
    logger.info({ peer: x.peer.ip, path: x.path, authority: x.authority }, `bad request: ${why}`);
    if (!x.writable) return;
    const body = Buffer.from(`bad request: ${why}\n`);
    const headers = new Headers({
      "content-type": "text/plain; charset=utf-8",
      "content-length": String(body.byteLength),
    });
    x.respond(400, headers, false);
    x.end(body);
  };

  /** A Connect unary error answer, as connect's handler writes one (JSON body, HTTP status). */
  const answerConnectError = (x: Exchange, error: ConnectError) => {
    if (!x.writable) return;
    const body = errorToJsonBytes(error, undefined);
    const headers = new Headers({
      "content-type": contentTypeUnaryJson,
      "content-length": String(body.byteLength),
    });
    x.respond(codeToHttpStatus(error.code), headers, false);
    x.end(body);
  };

  const routeOf = (path: string | undefined): Route | undefined => {
    if (draining || path === undefined) return undefined;
    const q = path.indexOf("?");
    return routes.get(q < 0 ? path : path.slice(0, q));
  };

  return {
    stream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) {
      const route = routeOf(headers[":path"]);
      if (route === undefined) return false;
      serve(new Http2Exchange(stream, headers, budgetOf(stream.session ?? stream)), route);
      return true;
    },
    http1(req: http.IncomingMessage, res: http.ServerResponse) {
      const route = routeOf(req.url);
      if (route === undefined) return false;
      serve(new Http1Exchange(req, res, budgetOf(req.socket)), route);
      return true;
    },
    drain() {
      draining = true;
    },
    bufferedBodyBytes: () => processBudget.used,
  };
}
