import { setTimeout as sleep } from "node:timers/promises";
import {
  Code,
  ConnectError,
  createClient,
  createContextValues,
  type Interceptor,
} from "@connectrpc/connect";
import { type Logger, pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { toRpcError } from "../../../shared/rpc-error.js";
import { kAuth } from "../context.js";
import { accessLogInterceptor, protocolOf } from "./access-log-interceptor.js";
import { errorInterceptor } from "./error-interceptor.js";
import { rateLimitInterceptor } from "./rate-limit-interceptor.js";
import { requestIdInterceptor } from "./request-id-interceptor.js";
import {
  captureLogs,
  fakeCaller,
  type LogLine,
  memoryClient,
  recordInto,
  type Seen,
  startWireServers,
  tinyUserService,
  type WireServers,
} from "./test-support.js";
import { timingInterceptor } from "./timing-interceptor.js";

const INFO = 30;
const WARN = 40;

/** The ConnectError a call (or a stream read to its end) fails with. */
async function failureOf(call: Promise<unknown> | AsyncIterable<unknown>): Promise<ConnectError> {
  try {
    if (Symbol.asyncIterator in call) for await (const _ of call);
    else await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

const rpcLines = (lines: LogLine[]) => lines.filter((l) => l.msg === "rpc");

/** An auth stand-in running inside the access log: sets kAuth on the call's context values. */
const lateAuth: Interceptor = (next) => (req) => {
  req.contextValues.set(kAuth, { userId: "u-42", username: "ada", roles: [], sessionId: "s" });
  return next(req);
};

describe("protocolOf", () => {
  it.each([
    ["application/grpc", "grpc"],
    ["application/grpc+proto", "grpc"],
    ["application/grpc-web+proto", "grpc-web"],
    ["application/grpc-web-text", "grpc-web"],
    ["application/proto", "connect"],
    ["application/connect+json", "connect"],
    [null, "connect"],
  ])("%s → %s", (contentType, protocol) => {
    const header = new Headers();
    if (contentType !== null) header.set("content-type", contentType);
    expect(protocolOf(header)).toBe(protocol);
  });
});

describe("accessLogInterceptor (in memory)", () => {
  it("logs one info line per unary call, with the call's logger and the user set inside it", async () => {
    const { logger, lines } = captureLogs();
    const client = memoryClient([
      fakeCaller("203.0.113.7"),
      requestIdInterceptor(logger),
      accessLogInterceptor(logger),
      lateAuth,
    ]);
    await client.getUser({ id: "1" }, { headers: { "x-request-id": "req-1" } });
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({
        level: INFO,
        msg: "rpc",
        procedure: "switchboard.user.v1.UserService/GetUser",
        protocol: "connect",
        peer: "203.0.113.7",
        user: "u-42",
        code: "ok",
        requestId: "req-1",
        durationMs: expect.any(Number),
      }),
    ]);
    const [line] = rpcLines(lines);
    expect(line).not.toHaveProperty("messagesSent");
    expect(Math.round((line?.durationMs as number) * 10)).toBe((line?.durationMs as number) * 10);
  });

  it("does not repeat the fields the call's logger is bound to", async () => {
    const raw: string[] = [];
    const logger: Logger = pino({ level: "info" }, { write: (line: string) => raw.push(line) });
    const client = memoryClient([requestIdInterceptor(logger), accessLogInterceptor(logger)]);
    await client.getUser({ id: "1" });
    expect(raw).toHaveLength(1);
    expect(raw[0]?.match(/"requestId"/g)).toHaveLength(1);
    expect(raw[0]?.match(/"procedure"/g)).toHaveLength(1);
  });

  it("falls back to the given logger, then naming the procedure itself", async () => {
    const { logger, lines } = captureLogs();
    const client = memoryClient([accessLogInterceptor(logger)]);
    await client.getUser({ id: "1" });
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({
        procedure: "switchboard.user.v1.UserService/GetUser",
        peer: "unknown",
        code: "ok",
      }),
    ]);
    expect(rpcLines(lines)[0]).not.toHaveProperty("user");
    expect(rpcLines(lines)[0]).not.toHaveProperty("requestId");
  });

  it("logs client errors at info and server failures at warn, passing the errors through unchanged", async () => {
    const { logger, lines } = captureLogs();
    const thrown = new ConnectError("bad id", Code.InvalidArgument);
    const client = memoryClient(
      [accessLogInterceptor(logger), errorInterceptor(logger)],
      tinyUserService({
        getUser(req) {
          if (req.id === "bad") throw thrown;
          if (req.id === "down") throw new ConnectError("database unavailable", Code.Unavailable);
          throw new TypeError("a bug");
        },
      }),
    );
    const bad = await failureOf(client.getUser({ id: "bad" }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toBe("bad id");
    expect((await failureOf(client.getUser({ id: "down" }))).code).toBe(Code.Unavailable);
    const bug = await failureOf(client.getUser({ id: "bug" }));
    expect(bug.code).toBe(Code.Internal);
    expect(bug.rawMessage).toBe("internal error");
    expect(rpcLines(lines).map((l) => [l.level, l.code])).toEqual([
      [INFO, "invalid_argument"],
      [WARN, "unavailable"],
      [WARN, "internal"],
    ]);
  });

  it("rethrows the very error object an inner layer threw", async () => {
    const { logger } = captureLogs();
    const thrown = new ConnectError("nope", Code.PermissionDenied);
    const interceptor = accessLogInterceptor(logger);
    const call = interceptor(() => Promise.reject(thrown));
    const req = {
      stream: false,
      service: UserService,
      method: UserService.method.getUser,
      header: new Headers(),
      contextValues: createContextValues(),
      signal: new AbortController().signal,
      requestMethod: "POST",
      url: "http://x/",
      message: {},
    } as unknown as Parameters<typeof call>[0];
    await expect(call(req)).rejects.toBe(thrown);
  });

  it("logs a server stream once, at its end, with message counts", async () => {
    const { logger, lines } = captureLogs();
    const client = memoryClient([fakeCaller("198.51.100.1"), accessLogInterceptor(logger)]);
    let seenBeforeEnd = -1;
    let n = 0;
    for await (const _ of client.getUserStream({ ids: ["a", "b", "c"] })) {
      if (++n === 2) seenBeforeEnd = rpcLines(lines).length;
    }
    expect(seenBeforeEnd).toBe(0);
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({
        procedure: "switchboard.user.v1.UserService/GetUserStream",
        code: "ok",
        messagesReceived: 1,
        messagesSent: 3,
      }),
    ]);
  });

  it("counts a client stream's messages", async () => {
    const { logger, lines } = captureLogs();
    const client = memoryClient([accessLogInterceptor(logger)]);
    await client.createUsers(
      (async function* () {
        for (const username of ["a", "b", "c", "d"]) yield { username };
      })(),
    );
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({ code: "ok", messagesReceived: 4, messagesSent: 1 }),
    ]);
  });

  it("logs a stream that fails mid-way with the error's code and what was sent", async () => {
    const { logger, lines } = captureLogs();
    const client = memoryClient(
      [accessLogInterceptor(logger), errorInterceptor(logger)],
      tinyUserService({
        async *getUserStream() {
          yield { id: "a" };
          throw new Error("a bug mid-stream");
        },
      }),
    );
    const err = await failureOf(client.getUserStream({ ids: ["a", "b"] }));
    expect(err.code).toBe(Code.Internal);
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({ level: WARN, code: "internal", messagesSent: 1 }),
    ]);
  });

  it("logs a stream rejected before it starts", async () => {
    const { logger, lines } = captureLogs();
    const client = memoryClient([
      accessLogInterceptor(logger),
      () => () => Promise.reject(new ConnectError("no", Code.Unauthenticated)),
    ]);
    await failureOf(client.getUserStream({ ids: ["a"] }));
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({ level: INFO, code: "unauthenticated", messagesSent: 0 }),
    ]);
  });
});

describe("accessLogInterceptor (real servers, every protocol)", () => {
  let servers: WireServers;
  let lines: LogLine[];
  beforeAll(async () => {
    const capture = captureLogs();
    lines = capture.lines;
    servers = await startWireServers(
      (router) =>
        router.service(
          UserService,
          tinyUserService({
            async *getUserStream(req, ctx) {
              yield { id: "first" };
              if (req.ids[0] !== "wait") return;
              // Like WatchUsers: wait for news until the client goes away.
              await new Promise((_, reject) =>
                ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason)),
              );
            },
          }),
        ),
      [
        fakeCaller("192.0.2.9"),
        requestIdInterceptor(capture.logger),
        accessLogInterceptor(capture.logger),
        errorInterceptor(capture.logger),
      ],
    );
  });
  afterAll(() => servers.close());

  it("names the protocol of each call", async () => {
    for (const { name, transport } of servers.clients) {
      lines.length = 0;
      await createClient(UserService, transport).getUser({ id: "1" });
      expect(rpcLines(lines), name).toEqual([
        expect.objectContaining({
          protocol: name.split(" ")[0],
          peer: "192.0.2.9",
          code: "ok",
          requestId: expect.any(String),
        }),
      ]);
    }
  });

  it("logs a stream the client cancels exactly once, as canceled", async () => {
    for (const { name, transport } of servers.clients) {
      lines.length = 0;
      const abort = new AbortController();
      const client = createClient(UserService, transport);
      await failureOf(
        (async function* () {
          for await (const item of client.getUserStream(
            { ids: ["wait"] },
            { signal: abort.signal },
          )) {
            abort.abort();
            yield item;
          }
        })(),
      );
      for (let i = 0; i < 50 && rpcLines(lines).length === 0; i++) await sleep(10);
      await sleep(20);
      expect(rpcLines(lines), name).toEqual([
        expect.objectContaining({ code: "canceled", messagesSent: 1, messagesReceived: 1 }),
      ]);
    }
  });
});

describe("the interceptors in their recommended order (real servers, every protocol)", () => {
  let servers: WireServers;
  let lines: LogLine[];
  beforeAll(async () => {
    const capture = captureLogs();
    lines = capture.lines;
    servers = await startWireServers(
      (router) =>
        router.service(
          UserService,
          tinyUserService({
            getUser(req) {
              if (req.id === "bug") throw new TypeError("secret detail");
              return { user: { id: req.id } };
            },
          }),
        ),
      [
        fakeCaller("192.0.2.50"), // the HTTP layer (kPeer)
        requestIdInterceptor(capture.logger),
        accessLogInterceptor(capture.logger),
        errorInterceptor(capture.logger),
        lateAuth, // auth
        rateLimitInterceptor({
          limits: {
            user: { points: 2, durationSeconds: 60 },
            public: { points: 1000, durationSeconds: 60 },
            login: { points: 1000, durationSeconds: 60 },
            register: { points: 1000, durationSeconds: 60 },
            chat: { points: 1000, durationSeconds: 60 },
          },
        }),
        timingInterceptor(),
      ],
    );
  });
  afterAll(() => servers.close());

  it("gives bugs and rate limits a request id, a log line and readable details", async () => {
    // The user limit (2/60 s for u-42) is shared by every protocol: one
    // successful call, then a bug, then rejections.
    const [first, ...rest] = servers.clients;
    if (!first) throw new Error("no clients");
    const okSeen: Seen = {};
    await createClient(UserService, first.transport).getUser({ id: "1" }, recordInto(okSeen));
    expect(okSeen.header?.get("x-request-id")).toBeTruthy();
    expect(okSeen.header?.get("server-timing")).toMatch(/^handler;dur=\d+\.\d$/);

    lines.length = 0;
    const bug = toRpcError(
      await failureOf(createClient(UserService, first.transport).getUser({ id: "bug" })),
    );
    expect(bug.kind).toBe("internal");
    expect(bug.message).toMatch(/^internal error/);
    expect(bug.message).not.toContain("secret");
    expect(bug.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(rpcLines(lines)).toEqual([
      expect.objectContaining({ level: WARN, code: "internal", requestId: bug.requestId }),
    ]);

    for (const { name, transport } of [first, ...rest]) {
      lines.length = 0;
      const headers = { "x-request-id": `limited-${name.replace(/[^a-z0-9]/g, "")}` };
      const e = toRpcError(
        await failureOf(createClient(UserService, transport).getUser({ id: "1" }, { headers })),
      );
      expect(e.kind, name).toBe("rate_limited");
      expect(e.retryDelayMs, name).toBeGreaterThan(50_000);
      expect(e.quotaViolations[0]?.subject, name).toBe("user:u-42");
      expect(e.requestId, name).toBe(headers["x-request-id"]);
      expect(rpcLines(lines), name).toEqual([
        expect.objectContaining({
          level: INFO,
          code: "resource_exhausted",
          user: "u-42",
          requestId: headers["x-request-id"],
        }),
      ]);
    }
  });
});
