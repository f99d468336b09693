import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { GetUserResponseSchema } from "../../gen/switchboard/user/v1/user_pb.js";
import { bump, type Counter, emit, serveControl } from "./control.js";
import { openStore, toUser } from "./server-modules.js";

/**
 * The ceiling: bare Node servers answering GetUser with a fixed,
 * pre-encoded response (the seeded user, encoded once at start-up exactly as
 * Switchboard encodes it). No framework, no router, no store per call: read
 * the request body, write the answer.
 *
 * - HTTP/2 (h2c) on PORT, node:http2's core stream API: gRPC
 *   (application/grpc*: envelope + `grpc-status: 0` trailer) or Connect
 *   unary (anything else: the plain message, application/proto).
 * - HTTP/1.1 on H1_PORT, node:http: gRPC-Web (application/grpc-web*:
 *   message frame + trailer frame in the body) or Connect unary.
 *
 * Environment: PORT, H1_PORT, DATA_DIR, BENCH_USER_ID.
 */

const PATH = "/switchboard.user.v1.UserService/GetUser";
const dataDir = process.env.DATA_DIR;
const userId = process.env.BENCH_USER_ID;
if (!dataDir || !userId) throw new Error("DATA_DIR and BENCH_USER_ID are required");

const store = await openStore({ dataDir });
const record = await store.getUser(userId);
await store.close();
if (!record) throw new Error(`user ${userId} not found in ${dataDir}`);
const message = Buffer.from(
  toBinary(
    GetUserResponseSchema,
    create(GetUserResponseSchema, { user: toUser(record, "private") }),
  ),
);

function envelope(flags: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt8(flags, 0);
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}
const grpcBody = envelope(0, message);
const grpcWebBody = Buffer.concat([grpcBody, envelope(0x80, Buffer.from("grpc-status: 0\r\n"))]);

const answered: Counter = {};

const h2 = http2.createServer({
  settings: { maxConcurrentStreams: Number(process.env.MAX_CONCURRENT_STREAMS ?? "256") },
});
h2.on("stream", (stream, headers) => {
  const isGrpc = String(headers["content-type"] ?? "").startsWith("application/grpc");
  stream.on("data", () => undefined);
  stream.on("end", () => {
    if (stream.destroyed) return;
    if (headers[":path"] !== PATH) {
      bump(answered, "h2-404");
      stream.respond({ ":status": 404 }, { endStream: true });
    } else if (isGrpc) {
      bump(answered, "h2-grpc");
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(grpcBody);
    } else {
      bump(answered, "h2-connect");
      stream.respond({ ":status": 200, "content-type": "application/proto" });
      stream.end(message);
    }
  });
  stream.on("error", () => undefined);
});

const h1 = http.createServer((req, res) => {
  const isGrpcWeb = String(req.headers["content-type"] ?? "").startsWith("application/grpc-web");
  req.on("data", () => undefined);
  req.on("end", () => {
    if (req.url !== PATH) {
      bump(answered, "h1-404");
      res.writeHead(404).end();
    } else if (isGrpcWeb) {
      bump(answered, "h1-grpc-web");
      res.writeHead(200, { "content-type": "application/grpc-web+proto" }).end(grpcWebBody);
    } else {
      bump(answered, "h1-connect");
      res.writeHead(200, { "content-type": "application/proto" }).end(message);
    }
  });
});

const listen = (server: http.Server | http2.Http2Server, port: number) =>
  new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve((server.address() as AddressInfo).port));
  });
const h2Port = await listen(h2, Number(process.env.PORT ?? "0"));
const h1Port = await listen(h1, Number(process.env.H1_PORT ?? "0"));
emit({
  type: "ready",
  url: `http://127.0.0.1:${h2Port}`,
  h1Url: `http://127.0.0.1:${h1Port}`,
  pid: process.pid,
});

serveControl({
  counters: () => ({ answered }),
  stop: async () => {
    const closed = (server: http.Server | http2.Http2Server) =>
      new Promise<void>((resolve) => server.close(() => resolve()));
    h1.closeAllConnections();
    const timer = setTimeout(() => process.exit(0), 2000);
    await Promise.all([closed(h1), closed(h2)]);
    clearTimeout(timer);
  },
});
