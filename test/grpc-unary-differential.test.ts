import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AuthService,
  LoginRequestSchema,
  LoginResponseSchema,
} from "../gen/switchboard/auth/v1/auth_pb.js";
import {
  GetUserRequestSchema,
  RegisterUserRequestSchema,
} from "../gen/switchboard/user/v1/user_pb.js";
import { registerAndLogin, type Session } from "./support/auth.js";
import {
  BUG_ID,
  type Differential,
  envelope,
  MAX_MESSAGE_BYTES,
  openDifferential,
  SLOW_ID,
} from "./support/differential.js";
import type { TestServer } from "./support/server.js";

/**
 * The gRPC unary fast path (server/src/protocol/grpc-unary.ts) against
 * connect's own gRPC handler: two servers built by the same `build`, on the
 * same store and signing key, one with UNARY_FAST_PATH=off. Every call of
 * the corpus goes to both over raw HTTP/2 frames, and what comes back —
 * HTTP status, response headers, message bytes, trailers,
 * grpc-status-details-bin — must be the same.
 *
 * Normalised before comparing (and only these): the `date` header (both
 * send one, Node's http2 adds it; its value moves on), the duration inside
 * `server-timing`, generated request ids, and the tokens Login issues.
 */

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
  trailers: Record<string, string>;
  details?: unknown;
  /** How the stream ended: its RST_STREAM code (0 = none or NO_ERROR). */
  rstCode: number;
}

interface Call {
  readonly path: string;
  readonly body?: Buffer | undefined;
  readonly headers?: Record<string, string>;
  /** Leave the request open (no END_STREAM) after the body. */
  readonly keepOpen?: boolean;
  /** Reset the stream with CANCEL this many ms after sending. */
  readonly cancelAfterMs?: number;
}

const GET_USER = "/switchboard.user.v1.UserService/GetUser";
const REGISTER = "/switchboard.user.v1.UserService/RegisterUser";
const LOGIN = "/switchboard.auth.v1.AuthService/Login";

const getUser = (id: string) =>
  toBinary(GetUserRequestSchema, create(GetUserRequestSchema, { id }));

/** One raw HTTP/2 call; resolves with everything that came back. */
function rawCall(url: string, call: Call): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(url);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": call.path,
      "content-type": "application/grpc",
      te: "trailers",
      ...call.headers,
    });
    const chunks: Buffer[] = [];
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => {
      headers = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
      // A request left open ends when the answer has: as gRPC clients do.
      if (call.keepOpen) setImmediate(() => stream.close());
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", () => undefined);
    stream.on("close", () => {
      session.close();
      // Who resets a request left open first (server or client) is a race.
      const rstCode = call.keepOpen ? 0 : (stream.rstCode ?? 0);
      resolve(normalise(headers, Buffer.concat(chunks), trailers, rstCode));
    });
    if (call.body) stream.write(call.body);
    if (!call.keepOpen) stream.end();
    if (call.cancelAfterMs !== undefined) {
      setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), call.cancelAfterMs);
    }
  });
}

function flat(h: http2.IncomingHttpHeaders, drop: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(h)) {
    if (drop.includes(key) || value === undefined) continue;
    out[key] = Array.isArray(value) ? value.join(", ") : String(value);
  }
  if (out["server-timing"])
    out["server-timing"] = out["server-timing"].replace(/dur=[\d.]+/, "dur=…");
  if (out["x-request-id"] && !out["x-request-id"].startsWith("diff-"))
    out["x-request-id"] = "<generated>";
  return out;
}

function normalise(
  h: http2.IncomingHttpHeaders,
  body: Buffer,
  t: http2.IncomingHttpHeaders,
  rstCode: number,
): Answer {
  const headers = flat(h, [":status", "date"]);
  const trailers = flat(t, []);
  const detailsBin = trailers["grpc-status-details-bin"] ?? headers["grpc-status-details-bin"];
  const answer: Answer = {
    status: Number(h[":status"] ?? 0),
    headers,
    body: body.toString("base64"),
    trailers,
    rstCode,
  };
  if (detailsBin) {
    // Decoded too, so a difference is readable in the test output.
    const error = findTrailerError(
      new Headers({ "grpc-status": "2", "grpc-status-details-bin": detailsBin }),
    );
    answer.details = error?.details.map((d) => ("type" in d ? d.type : d.desc.typeName));
  }
  return answer;
}

/** Login answers carry fresh tokens: keep their shape, drop their values. */
function maskTokens(answer: Answer): Answer {
  if (answer.body === "") return answer;
  const body = Buffer.from(answer.body, "base64");
  const message = fromBinary(LoginResponseSchema, body.subarray(5));
  return {
    ...answer,
    body: JSON.stringify(
      {
        ...message,
        accessToken: message.accessToken ? "<jwt>" : "",
        refreshToken: message.refreshToken ? "<token>" : "",
        // Issued a few ms apart: the expiry times differ by as much.
        accessTokenExpireTime: message.accessTokenExpireTime ? "<time>" : undefined,
        refreshTokenExpireTime: message.refreshTokenExpireTime ? "<time>" : undefined,
        $typeName: message.$typeName,
      },
      (_, v) => (typeof v === "bigint" ? v.toString() : v),
    ),
  };
}

/**
 * The one deliberate difference: the engine reads a unary body at its
 * request gate, inside the interceptor chain, so a body error comes back
 * with the request id (and is logged), where connect's handler answers it
 * before any interceptor runs. Checked, then taken out of the comparison.
 */
function gated(viaConnect: Answer, viaEngine: Answer): Answer {
  if (viaConnect.trailers["x-request-id"] !== undefined) return viaEngine;
  if (viaEngine.trailers["x-request-id"] === undefined) return viaEngine;
  expect(viaConnect.trailers["grpc-status"]).not.toBe("0");
  const { "x-request-id": _, ...trailers } = viaEngine.trailers;
  return { ...viaEngine, trailers };
}

describe("the gRPC unary fast path answers exactly as connect's gRPC handler", () => {
  let diff: Differential;
  let connect: TestServer;
  let fast: TestServer;
  let session: Session;
  let expired: string;

  beforeAll(async () => {
    diff = await openDifferential();
    connect = await diff.start("connect");
    fast = await diff.start("engine");
    session = await registerAndLogin(connect.url);
    // The same Login on the fast server, so both servers' login limits
    // (per IP, 3/60) start their window together: the rate-limited answers
    // below then tell the same "retry in N s".
    await createClient(AuthService, createGrpcTransport({ baseUrl: fast.url })).login({
      username: session.username,
      password: session.password,
    });
    expired = await diff.expiredToken(session);
  });

  afterAll(() => diff?.close());

  /** Sends `call` to connect's handler, then to the fast path; both answers. */
  async function both(call: Call): Promise<[Answer, Answer]> {
    diff.label("connect");
    const a = await rawCall(connect.url, call);
    diff.label("fast");
    const b = await rawCall(fast.url, call);
    return [a, gated(a, b)];
  }

  const authed = (extra: Record<string, string> = {}) => ({
    authorization: `Bearer ${session.accessToken}`,
    "x-request-id": "diff-1",
    ...extra,
  });

  const corpus: Array<[string, () => Call, string]> = [
    [
      "GetUser of an existing user",
      () => ({ path: GET_USER, body: envelope(getUser(session.userId)), headers: authed() }),
      "0",
    ],
    [
      "GetUser without x-request-id (one is generated)",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: { authorization: `Bearer ${session.accessToken}` },
      }),
      "0",
    ],
    [
      "GetUser of an unknown id",
      () => ({
        path: GET_USER,
        body: envelope(getUser("00000000-0000-7000-8000-000000000000")),
        headers: authed(),
      }),
      "5",
    ],
    [
      "GetUser with an empty id (BadRequest)",
      () => ({ path: GET_USER, body: envelope(getUser("")), headers: authed() }),
      "3",
    ],
    [
      "no token",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: { "x-request-id": "diff-2" },
      }),
      "16",
    ],
    [
      "a garbage token",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: authed({ authorization: "Bearer not.a.jwt" }),
      }),
      "16",
    ],
    [
      "an expired token",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: authed({ authorization: `Bearer ${expired}` }),
      }),
      "16",
    ],
    [
      "a bug in the handler's store (Internal with the request id)",
      () => ({ path: GET_USER, body: envelope(getUser(BUG_ID)), headers: authed() }),
      "13",
    ],
    [
      "a message over MAX_MESSAGE_BYTES",
      () => ({
        path: GET_USER,
        body: envelope(Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0)),
        headers: authed(),
      }),
      "8",
    ],
    [
      "an oversized message announced by a request that stays open",
      () => ({
        path: GET_USER,
        body: envelope(Buffer.alloc(10), 0, 1 << 20),
        headers: authed(),
        keepOpen: true,
      }),
      "8",
    ],
    [
      "bytes that are not a GetUserRequest",
      () => ({
        path: GET_USER,
        body: envelope(Buffer.from([0x0a, 0xff, 0xff])),
        headers: authed(),
      }),
      "13",
    ],
    ["no message at all", () => ({ path: GET_USER, body: undefined, headers: authed() }), "12"],
    [
      "two messages",
      () => ({
        path: GET_USER,
        body: Buffer.concat([envelope(getUser(session.userId)), envelope(getUser(session.userId))]),
        headers: authed(),
      }),
      "12",
    ],
    [
      "an incomplete envelope",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)).subarray(0, 10),
        headers: authed(),
      }),
      "3",
    ],
    [
      "a message and an incomplete second envelope",
      () => ({
        path: GET_USER,
        body: Buffer.concat([envelope(getUser(session.userId)), Buffer.from([0, 0])]),
        headers: authed(),
      }),
      "3",
    ],
    [
      "a gzip-compressed request",
      () => ({
        path: GET_USER,
        body: envelope(gzipSync(getUser(session.userId)), 1),
        headers: authed({ "grpc-encoding": "gzip", "grpc-accept-encoding": "gzip" }),
      }),
      "0",
    ],
    [
      "a compressed request without grpc-encoding",
      () => ({
        path: GET_USER,
        body: envelope(gzipSync(getUser(session.userId)), 1),
        headers: authed(),
      }),
      "13",
    ],
    [
      "an unknown grpc-encoding",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: authed({ "grpc-encoding": "snappy" }),
      }),
      "12",
    ],
    [
      "response compression offered (br)",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: authed({ "grpc-accept-encoding": "br" }),
      }),
      "0",
    ],
    [
      "an invalid grpc-timeout",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: authed({ "grpc-timeout": "soon" }),
      }),
      "3",
    ],
    [
      "a generous grpc-timeout",
      () => ({
        path: GET_USER,
        body: envelope(getUser(session.userId)),
        headers: authed({ "grpc-timeout": "10S" }),
      }),
      "0",
    ],
    [
      "a deadline that passes while the handler waits",
      () => ({
        path: GET_USER,
        body: envelope(getUser(SLOW_ID)),
        headers: authed({ "grpc-timeout": "100m" }),
      }),
      "4",
    ],
    [
      "a public call: RegisterUser with every field invalid",
      () => ({
        path: REGISTER,
        body: envelope(
          toBinary(
            RegisterUserRequestSchema,
            create(RegisterUserRequestSchema, { username: "x", email: "nope", password: "short" }),
          ),
        ),
        headers: { "x-request-id": "diff-3" },
      }),
      "3",
    ],
    [
      "RegisterUser of a taken username (ErrorInfo)",
      () => ({
        path: REGISTER,
        body: envelope(
          toBinary(
            RegisterUserRequestSchema,
            create(RegisterUserRequestSchema, {
              username: session.username.toUpperCase(),
              email: "other@example.com",
              password: "long enough password",
            }),
          ),
        ),
        headers: { "x-request-id": "diff-4" },
      }),
      "6",
    ],
    [
      "gRPC with JSON (declined by the fast path)",
      () => ({
        path: GET_USER,
        body: envelope(Buffer.from(JSON.stringify({ id: session.userId }))),
        headers: authed({ "content-type": "application/grpc+json" }),
      }),
      "0",
    ],
    [
      "a server-streaming method (declined)",
      () => ({
        path: "/switchboard.user.v1.UserService/GetUserStream",
        body: envelope(getUser(session.userId)),
        headers: authed(),
      }),
      "0",
    ],
    [
      "an unknown method (declined)",
      () => ({
        path: "/switchboard.user.v1.UserService/Nope",
        body: envelope(getUser(session.userId)),
        headers: authed(),
      }),
      "none (HTTP 404)",
    ],
  ];

  for (const [name, make, code] of corpus) {
    it(`${name}: same answer (grpc-status ${code})`, async () => {
      const [viaConnect, viaFast] = await both(make());
      const status = viaConnect.trailers["grpc-status"] ?? viaConnect.headers["grpc-status"];
      expect(status ?? `none (HTTP ${viaConnect.status})`).toBe(code);
      expect(viaFast).toEqual(viaConnect);
    });
  }

  it("Login: OK, wrong password, then the 4th attempt rate limited with QuotaFailure and RetryInfo", async () => {
    const login = (password: string) => ({
      path: LOGIN,
      body: envelope(
        toBinary(
          LoginRequestSchema,
          create(LoginRequestSchema, { username: session.username, password }),
        ),
      ),
      headers: { "x-request-id": "diff-login" },
    });
    // Each server saw one Login in beforeAll; both count the same calls.
    const [okA, okB] = await both(login(session.password));
    const [badA, badB] = await both(login("not the password"));
    expect(maskTokens(okB)).toEqual(maskTokens(okA));
    expect(badB).toEqual(badA);
    await both(login("not the password"));
    const [limitedA, limitedB] = await both(login(session.password));
    expect(limitedA.trailers["grpc-status"]).toBe("8");
    expect(limitedA.details).toContain("google.rpc.QuotaFailure");
    expect(limitedA.details).toContain("google.rpc.RetryInfo");
    // The delay counts down between the two calls (and may cross a whole
    // second): RetryInfo is compared by type, the "retry in N s" of the
    // message within a second, the rest exactly.
    const RETRY_IN = /retry%20in%20(\d+)%20s/;
    const retryIn = (a: Answer) => Number(RETRY_IN.exec(a.trailers["grpc-message"] ?? "")?.[1]);
    const apart = (a: Answer) => ({
      ...a,
      trailers: {
        ...a.trailers,
        "grpc-message": a.trailers["grpc-message"]?.replace(RETRY_IN, "retry%20in%20…%20s"),
        "grpc-status-details-bin": "<compared by type>",
      },
    });
    expect(apart(limitedB)).toEqual(apart(limitedA));
    expect(Math.abs(retryIn(limitedA) - retryIn(limitedB))).toBeLessThanOrEqual(1);
    expect(retryIn(limitedA)).toBeGreaterThan(0);
    expect(limitedB.details).toEqual(limitedA.details);
  });

  it("a client that resets the stream cancels the handler's signal (Canceled) on both", async () => {
    diff.slowAborts.length = 0;
    const [a, b] = await both({
      path: GET_USER,
      body: envelope(getUser(SLOW_ID)),
      headers: authed(),
      cancelAfterMs: 100,
    });
    expect(a.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(b.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    await expect.poll(() => diff.slowAborts.length).toBe(2);
    for (const { reason } of diff.slowAborts) {
      expect(ConnectError.from(reason).code).toBe(Code.Canceled);
    }
    expect(diff.slowAborts.map((s) => s.server)).toEqual(["connect", "fast"]);
  });

  it("really compares two paths: only the connect server's answers go through Node's compat layer", async () => {
    // Guards against the corpus passing because both servers went through
    // connect: count responses written by http2's (req, res) compat layer.
    const proto = http2.Http2ServerResponse.prototype as unknown as {
      writeHead: (...args: unknown[]) => unknown;
    };
    const original = proto.writeHead;
    let compat = 0;
    proto.writeHead = function (this: unknown, ...args: unknown[]) {
      compat++;
      return original.apply(this, args);
    };
    try {
      const call = { path: GET_USER, body: envelope(getUser(session.userId)), headers: authed() };
      await rawCall(fast.url, call);
      expect(compat).toBe(0);
      await rawCall(connect.url, call);
      expect(compat).toBe(1);
    } finally {
      proto.writeHead = original;
    }
  });
});
