import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import {
  type CallOptions,
  type ConnectRouter,
  createClient,
  createRouterTransport,
  type Interceptor,
  type ServiceImpl,
  type Transport,
} from "@connectrpc/connect";
import {
  connectNodeAdapter,
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { type Logger, pino } from "pino";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { kAuth, kPeer } from "../context.js";

/**
 * Test helpers shared by the interceptor tests (not used by the server):
 * a tiny UserService, an in-memory client, real HTTP/1.1 and HTTP/2
 * servers with a client per protocol, and a log capture.
 */

/** Log lines written by a captured pino logger, parsed. */
export type LogLine = Record<string, unknown>;

/** A real pino logger whose JSON lines land in `lines`. */
export function captureLogs(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger: Logger = pino(
    { level: "info" },
    { write: (line: string) => lines.push(JSON.parse(line) as LogLine) },
  );
  return { logger, lines };
}

/** A UserService good enough to exercise the three call kinds. */
export function tinyUserService(
  overrides: Partial<ServiceImpl<typeof UserService>> = {},
): Partial<ServiceImpl<typeof UserService>> {
  return {
    registerUser(req) {
      return { user: { id: "new", username: req.username } };
    },
    getUser(req) {
      return { user: { id: req.id, username: `user-${req.id}` } };
    },
    async *getUserStream(req) {
      for (const id of req.ids) yield { id, user: { id, username: `user-${id}` } };
    },
    async createUsers(reqs) {
      let created = 0;
      for await (const _ of reqs) created++;
      return { createdCount: created };
    },
    ...overrides,
  };
}

/** Pretends to be the HTTP layer (kPeer) and, optionally, auth (kAuth). */
export function fakeCaller(ip: string, userId?: string): Interceptor {
  return (next) => async (req) => {
    req.contextValues.set(kPeer, { ip, userAgent: "test" });
    if (userId !== undefined) {
      req.contextValues.set(kAuth, {
        userId,
        username: `user-${userId}`,
        roles: [],
        sessionId: "s",
      });
    }
    return next(req);
  };
}

/** An in-memory UserService client with `interceptors` (outermost first). */
export function memoryClient(
  interceptors: Interceptor[],
  impl: Partial<ServiceImpl<typeof UserService>> = tinyUserService(),
) {
  return createClient(
    UserService,
    createRouterTransport(({ service }) => service(UserService, impl), {
      router: { interceptors },
    }),
  );
}

/** A protocol and HTTP version a client can call with. */
export interface WireClient {
  readonly name: string;
  readonly transport: Transport;
}

/** Real servers (HTTP/2 cleartext and HTTP/1.1) and one client per protocol/HTTP version. */
export interface WireServers {
  readonly clients: readonly WireClient[];
  close(): Promise<void>;
}

/** Starts `routes` with `interceptors` on an h2c and an HTTP/1.1 server on 127.0.0.1. */
export async function startWireServers(
  routes: (router: ConnectRouter) => void,
  interceptors: Interceptor[],
): Promise<WireServers> {
  const handler = connectNodeAdapter({ routes, interceptors });
  const h2 = http2.createServer(handler);
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  const h1 = http.createServer(handler);
  await Promise.all(
    [h2, h1].map((s) => new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve))),
  );
  const h2Url = `http://127.0.0.1:${(h2.address() as AddressInfo).port}`;
  const h1Url = `http://127.0.0.1:${(h1.address() as AddressInfo).port}`;
  const clients: WireClient[] = [
    { name: "grpc (h2)", transport: createGrpcTransport({ baseUrl: h2Url }) },
    {
      name: "grpc-web (h1)",
      transport: createGrpcWebTransport({ baseUrl: h1Url, httpVersion: "1.1" }),
    },
    {
      name: "grpc-web (h2)",
      transport: createGrpcWebTransport({ baseUrl: h2Url, httpVersion: "2" }),
    },
    {
      name: "connect (h1)",
      transport: createConnectTransport({ baseUrl: h1Url, httpVersion: "1.1" }),
    },
    {
      name: "connect (h2)",
      transport: createConnectTransport({ baseUrl: h2Url, httpVersion: "2" }),
    },
  ];
  return {
    clients,
    async close() {
      h1.closeAllConnections();
      await new Promise<void>((resolve) => h1.close(() => resolve()));
      const closed = new Promise<void>((resolve) => h2.close(() => resolve()));
      // Clients keep HTTP/2 sessions open; they would keep the server from closing.
      for (const session of sessions) session.destroy();
      await closed;
    },
  };
}

/** Response headers and trailers of one call, as the client saw them. */
export interface Seen {
  header?: Headers;
  trailer?: Headers;
}

/** Call options that record the response headers and trailers into `seen`. */
export function recordInto(seen: Seen, extra: CallOptions = {}): CallOptions {
  return {
    ...extra,
    onHeader: (h) => {
      seen.header = new Headers(h);
    },
    onTrailer: (t) => {
      seen.trailer = new Headers(t);
    },
  };
}
