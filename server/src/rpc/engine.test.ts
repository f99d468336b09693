import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import {
  create,
  createFileRegistry,
  createRegistry,
  type DescService,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { type ConnectRouter, createContextValues, type HandlerContext } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, connectNodeAdapter } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { file_google_rpc_status, StatusSchema } from "../../../gen/google/rpc/status_pb.js";
import { createEngine, type Engine } from "./engine.js";
import { createListener, type Listener } from "./listener.js";

/**
 * The engine on its own, with a test service built at run time: unary
 * `Echo` and server-streaming `Ticks`, both over `google.rpc.Status` (whose
 * `details` are `google.protobuf.Any`). Each test pins a behaviour the
 * engine must have and that its earlier fast paths or connect-node lacked,
 * several against connect-node's adapter on the same service.
 */

const registry = createFileRegistry(
  create(FileDescriptorProtoSchema, {
    name: "engine_test.proto",
    package: "switchboard.enginetest",
    dependency: ["google/rpc/status.proto"],
    syntax: "proto3",
    service: [
      {
        name: "TestService",
        method: [
          { name: "Echo", inputType: ".google.rpc.Status", outputType: ".google.rpc.Status" },
          {
            name: "Ticks",
            inputType: ".google.rpc.Status",
            outputType: ".google.rpc.Status",
            serverStreaming: true,
          },
        ],
      },
    ],
  }),
  (name) => (name === "google/rpc/status.proto" ? file_google_rpc_status : undefined),
);
const TestService = registry.getService("switchboard.enginetest.TestService") as DescService;
const jsonOptions = { registry: createRegistry(ErrorInfoSchema) };

/** What the handlers saw of `timeoutMs()`, newest last. */
const seenTimeouts: Array<number | undefined> = [];

function testRoutes(router: ConnectRouter): void {
  router.service(TestService, {
    // Echoes the request after `code` milliseconds; fails on a fractional
    // deadline the way a handler doing BigInt(ctx.timeoutMs()) would.
    async echo(req: { code: number }, ctx: HandlerContext) {
      const left = ctx.timeoutMs();
      seenTimeouts.push(left);
      if (left !== undefined) BigInt(left);
      if (req.code > 0) await new Promise((resolve) => setTimeout(resolve, req.code));
      return req;
    },
    async *ticks(req: { code: number }) {
      for (let i = 0; i < req.code; i++) yield { code: i, message: "x".repeat(200) };
    },
  } as never);
}

interface Running {
  readonly url: string;
  readonly port: number;
  readonly engine?: Engine;
  close(): Promise<void>;
}

const running: Running[] = [];
afterEach(async () => {
  for (const server of running.splice(0)) await server.close();
});

async function listen(listener: Listener, engine?: Engine): Promise<Running> {
  await new Promise<void>((resolve) => listener.server.listen(0, "127.0.0.1", resolve));
  const port = (listener.server.address() as AddressInfo).port;
  const server: Running = {
    url: `http://127.0.0.1:${port}`,
    port,
    engine,
    async close() {
      listener.destroyAll();
      await new Promise((resolve) => listener.server.close(resolve));
    },
  };
  running.push(server);
  return server;
}

/** The engine serving the test service (404 for anything else). */
async function startEngine(options: { withJsonOptions?: boolean; perConnection?: number } = {}) {
  const engine = createEngine({
    routes: testRoutes,
    interceptors: [],
    contextValues: () => createContextValues(),
    acceptCompression: [compressionGzip, compressionBrotli],
    readMaxBytes: 8 * 1024 * 1024,
    writeMaxBytes: 8 * 1024 * 1024,
    jsonOptions: options.withJsonOptions === false ? undefined : jsonOptions,
    shutdownSignal: new AbortController().signal,
    bodyBudget: { perConnection: options.perConnection ?? 16 * 1024 * 1024, total: 1 << 30 },
    logger: pino({ level: "silent" }),
  });
  const listener = createListener(
    (_req, res) => {
      res.statusCode = 404;
      res.end();
    },
    {
      maxConcurrentStreams: 256,
      streamHandler: engine.stream,
      http1Handler: engine.http1,
    },
  );
  return listen(listener, engine);
}

/** connect-node's own adapter on the same service, the reference. */
async function startConnectNode() {
  const handler = connectNodeAdapter({
    routes: testRoutes,
    jsonOptions,
    readMaxBytes: 8 * 1024 * 1024,
    writeMaxBytes: 8 * 1024 * 1024,
  });
  return listen(createListener(handler as never, { maxConcurrentStreams: 256 }));
}

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: string;
  trailers: Record<string, string>;
}

/** One HTTP/1.1 request. */
function h1(
  server: Running,
  path: string,
  headers: Record<string, string>,
  body: Buffer | string,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: "127.0.0.1", port: server.port, method: "POST", path, headers },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: withoutDate(res.headers),
            body: Buffer.concat(chunks).toString("latin1"),
            trailers: res.trailers as Record<string, string>,
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** One HTTP/2 request (h2c), its body written in `frameBytes` pieces. */
function h2(
  server: Running,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  frameBytes = body.byteLength || 1,
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const client = http2.connect(server.url);
    client.on("error", reject);
    const stream = client.request({ ":method": "POST", ":path": path, ...headers });
    let status = 0;
    let responseHeaders: Record<string, string> = {};
    let trailers: Record<string, string> = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => {
      status = Number(h[":status"]);
      const { ":status": _, ...rest } = h;
      responseHeaders = withoutDate(rest);
    });
    stream.on("trailers", (t) => {
      trailers = { ...(t as Record<string, string>) };
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("close", () => {
      client.close();
      resolve({
        status,
        headers: responseHeaders,
        body: Buffer.concat(chunks).toString("latin1"),
        trailers,
      });
    });
    stream.on("error", () => undefined);
    for (let i = 0; i < body.byteLength; i += frameBytes) {
      stream.write(body.subarray(i, i + frameBytes));
    }
    stream.end();
  });
}

function withoutDate(headers: object): Record<string, string> {
  const { date: _, ...rest } = headers as Record<string, string>;
  return rest;
}

/** A gRPC envelope. */
function envelope(bytes: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(bytes.byteLength, 1);
  return Buffer.concat([head, bytes]);
}

const statusBytes = (code: number) => toBinary(StatusSchema, create(StatusSchema, { code }));
const ECHO = "/switchboard.enginetest.TestService/Echo";
const TICKS = "/switchboard.enginetest.TestService/Ticks";

describe("the engine", () => {
  const withAny = JSON.stringify({
    code: 3,
    message: "with details",
    details: [
      {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        reason: "SOME_REASON",
        domain: "switchboard.dev",
      },
    ],
  });

  it("serves JSON with google.protobuf.Any through its jsonOptions, as connect-node does", async () => {
    const engine = await startEngine();
    const reference = await startConnectNode();
    const headers = { "content-type": "application/json" };
    const viaEngine = await h1(engine, ECHO, headers, withAny);
    const viaConnect = await h1(reference, ECHO, headers, withAny);
    expect(viaEngine.status).toBe(200);
    expect(JSON.parse(viaEngine.body)).toEqual(JSON.parse(withAny));
    expect(viaEngine).toEqual(viaConnect);
    // And the same over HTTP/2.
    const overH2 = await h2(engine, ECHO, headers, Buffer.from(withAny));
    expect(JSON.parse(overH2.body)).toEqual(JSON.parse(withAny));
  });

  it("refuses JSON with an Any it cannot resolve when no registry is configured", async () => {
    const engine = await startEngine({ withJsonOptions: false });
    const reply = await h1(engine, ECHO, { "content-type": "application/json" }, withAny);
    expect(reply.status).toBe(400);
    expect(JSON.parse(reply.body).code).toBe("invalid_argument");
  });

  it("gives handlers whole milliseconds for a fractional grpc-timeout (1999672u), on gRPC and gRPC-Web", async () => {
    const engine = await startEngine();
    seenTimeouts.length = 0;
    const grpc = await h2(
      engine,
      ECHO,
      { "content-type": "application/grpc", "grpc-timeout": "1999672u", te: "trailers" },
      envelope(statusBytes(0)),
    );
    expect(grpc.trailers["grpc-status"]).toBe("0");
    const grpcWeb = await h1(
      engine,
      ECHO,
      { "content-type": "application/grpc-web+proto", "grpc-timeout": "1999672u" },
      envelope(statusBytes(0)),
    );
    expect(grpcWeb.body).toMatch(/grpc-status: ?0\r\n/);
    expect(seenTimeouts).toHaveLength(2);
    for (const left of seenTimeouts) {
      expect(Number.isInteger(left)).toBe(true);
      expect(left).toBeLessThanOrEqual(1999);
      expect(left).toBeGreaterThan(1900);
    }
  });

  it("serves a deadline beyond Node's timer range as no practical deadline instead of expiring at once", async () => {
    const engine = await startEngine();
    // The handler takes 30 ms: an overflowing timer would fire after 1 ms.
    const slow = statusBytes(30);
    const grpc = await h2(
      engine,
      ECHO,
      { "content-type": "application/grpc", "grpc-timeout": "99999999H", te: "trailers" },
      envelope(slow),
    );
    expect(grpc.trailers["grpc-status"]).toBe("0");
    const connect = await h1(
      engine,
      ECHO,
      { "content-type": "application/proto", "connect-timeout-ms": "9999999999" },
      Buffer.from(slow),
    );
    expect(connect.status).toBe(200);
    const grpcWeb = await h1(
      engine,
      ECHO,
      { "content-type": "application/grpc-web+proto", "grpc-timeout": "99999999S" },
      envelope(slow),
    );
    expect(grpcWeb.body).toMatch(/grpc-status: ?0\r\n/);
  });

  it("answers a request with an invalid or missing Host 400 before routing", async () => {
    const engine = await startEngine();
    const bad = await h1(engine, ECHO, { "content-type": "application/json", host: "[x" }, "{}");
    expect(bad.status).toBe(400);
    expect(bad.body).toContain("invalid host");
    const noHost = await new Promise<string>((resolve) => {
      const raw = net.connect(engine.port, "127.0.0.1", () => {
        raw.write(
          `POST ${ECHO} HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}`,
        );
      });
      let text = "";
      raw.on("data", (c: Buffer) => {
        text += c.toString();
      });
      raw.on("close", () => resolve(text));
    });
    expect(noHost).toMatch(/^HTTP\/1\.[01] 400/);
    expect(noHost).toContain("missing host");
  });

  it("reads a 4 MiB gRPC body in 16 KiB frames in linear time: under 3× connect-node's CPU", async () => {
    const engine = await startEngine();
    const reference = await startConnectNode();
    const big = envelope(
      toBinary(
        StatusSchema,
        create(StatusSchema, { code: 0, message: "y".repeat(4 * 1024 * 1024 - 64) }),
      ),
    );
    const headers = { "content-type": "application/grpc", te: "trailers" };
    const cpu = async (server: Running) => {
      await h2(server, ECHO, headers, big, 16 * 1024); // warm
      const start = process.cpuUsage();
      for (let i = 0; i < 3; i++) {
        const reply = await h2(server, ECHO, headers, big, 16 * 1024);
        expect(reply.trailers["grpc-status"]).toBe("0");
      }
      const used = process.cpuUsage(start);
      return used.user + used.system;
    };
    const engineCpu = await cpu(engine);
    const connectCpu = await cpu(reference);
    // Both include this process's client; a quadratic reader costs ~20× here.
    expect(engineCpu).toBeLessThan(3 * connectCpu);
  });

  it("bounds request bytes held by unfinished bodies on one connection, and refuses calls past the budget", async () => {
    const budget = 1024 * 1024;
    const engine = await startEngine({ perConnection: budget });
    const client = http2.connect(engine.url);
    const streams: http2.ClientHttp2Stream[] = [];
    const statuses: string[] = [];
    // 64 streams, each announcing 4 MiB and sending 64 KiB of it, never ending.
    for (let i = 0; i < 64; i++) {
      const stream = client.request({
        ":method": "POST",
        ":path": ECHO,
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("trailers", (t) => statuses.push(String(t["grpc-status"])));
      stream.on("error", () => undefined);
      const head = Buffer.alloc(5);
      head.writeUInt32BE(4 * 1024 * 1024, 1);
      stream.write(Buffer.concat([head, Buffer.alloc(64 * 1024)]));
      streams.push(stream);
    }
    await expect.poll(() => statuses.length, { timeout: 5000 }).toBeGreaterThan(0);
    expect(engine.engine?.bufferedBodyBytes()).toBeLessThanOrEqual(budget);
    expect(new Set(statuses)).toEqual(new Set(["8"]));
    for (const stream of streams) stream.close();
    client.close();
    await expect.poll(() => engine.engine?.bufferedBodyBytes()).toBe(0);
  });

  it("streams a server stream to a gRPC-Web HTTP/1.1 client, every message and the trailer frame", async () => {
    const engine = await startEngine();
    const reply = await h1(
      engine,
      TICKS,
      { "content-type": "application/grpc-web+proto" },
      envelope(statusBytes(50)),
    );
    const body = Buffer.from(reply.body, "latin1");
    let messages = 0;
    let offset = 0;
    let trailer = "";
    while (offset < body.byteLength) {
      const flags = body[offset] as number;
      const length = body.readUInt32BE(offset + 1);
      const data = body.subarray(offset + 5, offset + 5 + length);
      if (flags & 0x80) trailer = data.toString();
      else messages++;
      offset += 5 + length;
    }
    expect(messages).toBe(50);
    expect(trailer).toMatch(/grpc-status: ?0\r\n/);
  });
});
