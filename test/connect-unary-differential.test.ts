import { readFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import https from "node:https";
import { gzipSync } from "node:zlib";
import {
  create,
  type DescMessage,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoginRequestSchema, LoginResponseSchema } from "../gen/switchboard/auth/v1/auth_pb.js";
import { SendRequestSchema } from "../gen/switchboard/chat/v1/chat_pb.js";
import {
  GetUserRequestSchema,
  RegisterUserRequestSchema,
} from "../gen/switchboard/user/v1/user_pb.js";
import { ensureCerts } from "../scripts/lib/certs.js";
import { registerAndLogin, type Session } from "./support/auth.js";
import {
  BUG_ID,
  type Differential,
  MAX_MESSAGE_BYTES,
  openDifferential,
  SLOW_ID,
} from "./support/differential.js";
import { type TestServer, tempDataDir } from "./support/server.js";

/**
 * The Connect unary fast path (server/src/protocol/connect-unary.ts) against
 * connect's own Connect handler: servers built by the same `build`, on the
 * same store and signing key, one of each pair with UNARY_FAST_PATH=off.
 * Every call of the corpus goes to both over raw HTTP/1.1 (node:http, a
 * keep-alive connection of its own) and raw HTTP/2 (node:http2), with the
 * binary and the JSON codec, and what comes back — HTTP status, response
 * headers (and their order), body bytes — must be the same. A TLS pair
 * repeats part of the corpus over HTTP/1.1 and h2 negotiated by ALPN.
 *
 * Normalised before comparing (and only these): the `date` header's value,
 * the duration inside `server-timing`, generated request ids, the tokens and
 * expiry times Login issues (and so the length of its body), and RetryInfo's
 * delay (it counts down between the two calls).
 */

const UNKNOWN_ID = "00000000-0000-7000-8000-000000000000";

const GET_USER = "/switchboard.user.v1.UserService/GetUser";
const REGISTER = "/switchboard.user.v1.UserService/RegisterUser";
const LOGIN = "/switchboard.auth.v1.AuthService/Login";
const SEND = "/switchboard.chat.v1.ChatService/Send";

type Transport = "h1" | "h2";

interface Call {
  readonly path?: string;
  readonly method?: string;
  readonly headers?: Record<string, string>;
  readonly body?: Buffer | undefined;
  /**
   * content-length: "auto" sends one on HTTP/1.1 (as node:http and browsers
   * do) and none on HTTP/2 (as connect-node does); "send" always; "omit"
   * never (HTTP/1.1 then sends the body chunked).
   */
  readonly length?: "auto" | "send" | "omit";
  /** Give up on the call this many ms after sending (h1: destroy; h2: RST_STREAM CANCEL). */
  readonly cancelAfterMs?: number;
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  /** Response header names in the order they came. */
  order: string[];
  /** Body bytes, base64. */
  body: string;
  /** The body as text, when it is JSON (readable in a failing diff). */
  text?: string;
  /** How the call ended: "answered", or "cancelled" by the client. */
  end: string;
}

interface Target {
  readonly url: string;
  readonly ca?: Buffer;
}

/** One raw HTTP/1.1 call on a keep-alive connection of its own. */
function h1Call(target: Target, call: Call): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...call.headers };
    if (call.body && (call.length ?? "auto") !== "omit") {
      headers["content-length"] = String(call.body.byteLength);
    }
    const tls = target.ca !== undefined;
    const agent = tls
      ? new https.Agent({ keepAlive: true, ca: target.ca, ALPNProtocols: ["http/1.1"] })
      : new http.Agent({ keepAlive: true });
    const request = tls ? https.request : http.request;
    const req = request(
      new URL(call.path ?? GET_USER, target.url),
      { method: call.method ?? "POST", headers, agent },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          agent.destroy();
          resolve(answer(res.statusCode ?? 0, res.headers, res.rawHeaders, Buffer.concat(chunks)));
        });
      },
    );
    req.on("error", (error) => {
      agent.destroy();
      if (call.cancelAfterMs !== undefined) resolve(cancelled());
      else reject(error);
    });
    if (call.body) req.write(call.body);
    req.end();
    if (call.cancelAfterMs !== undefined) setTimeout(() => req.destroy(), call.cancelAfterMs);
  });
}

/** One raw HTTP/2 call on a session of its own. */
function h2Call(target: Target, call: Call): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(target.url, target.ca ? { ca: target.ca } : {});
    session.on("error", reject);
    const headers: http2.OutgoingHttpHeaders = {
      ":method": call.method ?? "POST",
      ":path": call.path ?? GET_USER,
      ...call.headers,
    };
    if (call.body && call.length === "send") headers["content-length"] = call.body.byteLength;
    const stream = session.request(headers);
    const chunks: Buffer[] = [];
    let response: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => {
      response = h;
    });
    stream.on("data", (c: Buffer) => chunks.push(c));
    stream.on("error", () => undefined);
    // Resolved when the answer is complete: a server that leaves the rest
    // of a too-large request unread does not end the stream itself.
    stream.on("end", () => {
      if (call.cancelAfterMs !== undefined) return;
      stream.close();
      session.close();
      const raw = Object.entries(response).flatMap(([k, v]) => [k, String(v)]);
      resolve(answer(Number(response[":status"] ?? 0), response, raw, Buffer.concat(chunks)));
    });
    stream.on("close", () => {
      session.close();
      if (call.cancelAfterMs !== undefined) resolve(cancelled());
    });
    if (call.body) stream.write(call.body);
    stream.end();
    if (call.cancelAfterMs !== undefined) {
      setTimeout(() => stream.close(http2.constants.NGHTTP2_CANCEL), call.cancelAfterMs);
    }
  });
}

function cancelled(): Answer {
  return { status: 0, headers: {}, order: [], body: "", end: "cancelled" };
}

function answer(
  status: number,
  h: http.IncomingHttpHeaders | http2.IncomingHttpHeaders,
  rawHeaders: string[],
  body: Buffer,
): Answer {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(h)) {
    if (key.startsWith(":") || value === undefined) continue;
    headers[key] = Array.isArray(value) ? value.join(", ") : String(value);
  }
  if (headers.date !== undefined) headers.date = "<date>";
  if (headers["server-timing"]) {
    headers["server-timing"] = headers["server-timing"].replace(/dur=[\d.]+/, "dur=…");
  }
  if (headers["x-request-id"] && !headers["x-request-id"].startsWith("diff-")) {
    headers["x-request-id"] = "<generated>";
  }
  const order = rawHeaders.filter((_, i) => i % 2 === 0).map((k) => k.toLowerCase());
  const result: Answer = {
    status,
    headers,
    order: order.filter((k) => !k.startsWith(":")),
    body: body.toString("base64"),
    end: "answered",
  };
  if (headers["content-type"]?.startsWith("application/json") && !headers["content-encoding"]) {
    result.text = body.toString("utf8");
  }
  return result;
}

const send: Record<Transport, (target: Target, call: Call) => Promise<Answer>> = {
  h1: h1Call,
  h2: h2Call,
};

/** A binary (application/proto) request body. */
function proto<D extends DescMessage>(schema: D, init: MessageInitShape<D>): Call {
  return {
    headers: { "content-type": "application/proto" },
    body: Buffer.from(toBinary(schema, create(schema, init))),
  };
}

/** A JSON (application/json) request body. */
function json(value: unknown, contentType = "application/json"): Call {
  return { headers: { "content-type": contentType }, body: Buffer.from(JSON.stringify(value)) };
}

/** `base` with more headers and fields. */
function withCall(base: Call, extra: Call): Call {
  return { ...base, ...extra, headers: { ...base.headers, ...extra.headers } };
}

/** Login answers carry fresh tokens: keep their shape, drop their values. */
function maskTokens(a: Answer): Answer {
  if (a.status !== 200) return a;
  const bytes = Buffer.from(a.body, "base64");
  const message: Record<string, unknown> = a.headers["content-type"]?.startsWith("application/json")
    ? JSON.parse(bytes.toString("utf8"))
    : { ...fromBinary(LoginResponseSchema, bytes) };
  for (const key of [
    "accessToken",
    "refreshToken",
    "accessTokenExpireTime",
    "refreshTokenExpireTime",
  ]) {
    if (message[key]) message[key] = `<${key}>`;
  }
  const body = JSON.stringify(message, (_, v) => (typeof v === "bigint" ? v.toString() : v));
  const { text: _text, ...rest } = a;
  return { ...rest, headers: { ...a.headers, "content-length": "<masked>" }, body };
}

/** Error details by type; the answer with its (count-down) details left out. */
function detailsApart(a: Answer): { answer: Answer; types: string[] } {
  const error = JSON.parse(a.text ?? "{}") as { details?: Array<{ type: string }> };
  const { body: _body, text: _text, ...rest } = a;
  return {
    answer: {
      ...rest,
      headers: { ...a.headers, "content-length": "<compared by type>" },
      body: "<compared by type>",
    },
    types: (error.details ?? []).map((d) => d.type),
  };
}

/**
 * The one deliberate difference: the engine reads a unary body at its
 * request gate, inside the interceptor chain, so a body error comes back
 * with the request id (and is logged), where connect's handler answers it
 * before any interceptor runs. Checked, then taken out of the comparison.
 */
function gated(viaConnect: Answer, viaEngine: Answer): Answer {
  if (viaConnect.headers["x-request-id"] !== undefined) return viaEngine;
  if (viaEngine.headers["x-request-id"] === undefined) return viaEngine;
  expect(viaConnect.status).toBeGreaterThanOrEqual(400);
  const { "x-request-id": _, ...headers } = viaEngine.headers;
  return { ...viaEngine, headers, order: viaEngine.order.filter((k) => k !== "x-request-id") };
}

describe("the Connect unary fast path answers exactly as connect's Connect handler", () => {
  let diff: Differential;
  let connect: TestServer;
  let fast: TestServer;
  let connectTls: TestServer;
  let fastTls: TestServer;
  let ca: Buffer;
  let session: Session;
  let expired: string;

  beforeAll(async () => {
    diff = await openDifferential();
    connect = await diff.start("connect");
    fast = await diff.start("engine");
    const { paths } = await ensureCerts({ dir: await tempDataDir() });
    ca = await readFile(paths.caCert);
    const tls = { TLS_CERT: paths.serverCert, TLS_KEY: paths.serverKey };
    connectTls = await diff.start("connect", tls);
    fastTls = await diff.start("engine", tls);
    session = await registerAndLogin(connect.url);
    expired = await diff.expiredToken(session);
  });

  afterAll(() => diff?.close());

  const targets = (tls: boolean): [Target, Target] =>
    tls
      ? [
          { url: `https://localhost:${connectTls.port}`, ca },
          { url: `https://localhost:${fastTls.port}`, ca },
        ]
      : [{ url: connect.url }, { url: fast.url }];

  /** Sends `call` to connect's handler, then to the fast path; both answers. */
  async function both(transport: Transport, call: Call, tls = false): Promise<[Answer, Answer]> {
    const [viaConnect, viaFast] = targets(tls);
    diff.label("connect");
    const a = await send[transport](viaConnect, call);
    diff.label("fast");
    const b = await send[transport](viaFast, call);
    return [a, gated(a, b)];
  }

  const authed = (extra: Record<string, string> = {}) => ({
    authorization: `Bearer ${session.accessToken}`,
    "x-request-id": "diff-1",
    ...extra,
  });
  /** GetUser of `id` with the session's token, binary or JSON. */
  const getUser = (
    codec: "proto" | "json",
    id: string,
    headers: Record<string, string> = authed(),
  ): Call =>
    withCall(codec === "proto" ? proto(GetUserRequestSchema, { id }) : json({ id }), {
      headers,
    });
  const invalidRegistration = { username: "x", email: "nope", password: "short" };
  /**
   * A Send whose answer is over 1 KiB (so it is compressed when the client
   * accepts it). The client_msg_id makes the second server's call a retry:
   * both answer with the same stored message.
   */
  const bigSend = (codec: "proto" | "json", encoding: string): Call => {
    const init = { room: "diff", clientMsgId: `diff-${codec}-${encoding}`, text: "x".repeat(1500) };
    return withCall(codec === "proto" ? proto(SendRequestSchema, init) : json(init), {
      path: SEND,
      headers: authed({ "accept-encoding": encoding }),
    });
  };

  // [name, call, HTTP status connect answers with]
  const corpus: Array<[string, () => Call, number]> = [
    ["GetUser (proto)", () => getUser("proto", session.userId), 200],
    ["GetUser (JSON)", () => getUser("json", session.userId), 200],
    [
      "GetUser (JSON; charset=utf-8)",
      () =>
        withCall(getUser("json", session.userId), {
          headers: { "content-type": "application/json; charset=utf-8" },
        }),
      200,
    ],
    [
      "GetUser without x-request-id (one is generated)",
      () => getUser("proto", session.userId, { authorization: `Bearer ${session.accessToken}` }),
      200,
    ],
    [
      "GetUser with a user-agent and a repeated header",
      () =>
        withCall(getUser("json", session.userId), {
          headers: { "user-agent": `diff/${"x".repeat(300)}`, "x-custom": "a" },
        }),
      200,
    ],
    ["GetUser of an unknown id (JSON)", () => getUser("json", UNKNOWN_ID), 404],
    ["GetUser of an unknown id (proto)", () => getUser("proto", UNKNOWN_ID), 404],
    ["GetUser with an empty id (BadRequest, JSON)", () => getUser("json", ""), 400],
    ["GetUser with an empty id (BadRequest, proto)", () => getUser("proto", ""), 400],
    ["no token", () => getUser("json", session.userId, { "x-request-id": "diff-2" }), 401],
    [
      "a garbage token",
      () => getUser("proto", session.userId, authed({ authorization: "Bearer not.a.jwt" })),
      401,
    ],
    [
      "an expired token",
      () => getUser("json", session.userId, authed({ authorization: `Bearer ${expired}` })),
      401,
    ],
    [
      "a bug in the handler's store (Internal with the request id, JSON)",
      () => getUser("json", BUG_ID),
      500,
    ],
    [
      "a bug in the handler's store (Internal with the request id, proto)",
      () => getUser("proto", BUG_ID),
      500,
    ],
    [
      "a body over MAX_MESSAGE_BYTES with content-length (JSON)",
      () =>
        withCall(getUser("json", session.userId), {
          body: Buffer.alloc(MAX_MESSAGE_BYTES + 1000, 0x20),
          length: "send",
        }),
      429,
    ],
    [
      "a body over MAX_MESSAGE_BYTES with content-length (proto)",
      () =>
        withCall(getUser("proto", session.userId), {
          body: Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0),
          length: "send",
        }),
      429,
    ],
    [
      "a body over MAX_MESSAGE_BYTES without content-length",
      () =>
        withCall(getUser("json", session.userId), {
          body: Buffer.alloc(MAX_MESSAGE_BYTES + 1000, 0x20),
          length: "omit",
        }),
      429,
    ],
    [
      "a body of exactly MAX_MESSAGE_BYTES without content-length (JSON whitespace)",
      () => {
        const text = JSON.stringify({ id: session.userId });
        return withCall(getUser("json", session.userId), {
          body: Buffer.from(text.padEnd(MAX_MESSAGE_BYTES, " ")),
          length: "omit",
        });
      },
      200,
    ],
    [
      "bytes that are not a GetUserRequest",
      () => withCall(getUser("proto", session.userId), { body: Buffer.from([0x0a, 0xff, 0xff]) }),
      500,
    ],
    [
      "malformed JSON",
      () => withCall(getUser("json", session.userId), { body: Buffer.from("{nope") }),
      400,
    ],
    [
      "JSON of the wrong type",
      () => withCall(getUser("json", session.userId), { body: Buffer.from('{"id":5}') }),
      400,
    ],
    [
      "an unknown JSON field (ignored, as connect ignores them)",
      () =>
        withCall(getUser("json", session.userId), {
          body: Buffer.from(JSON.stringify({ id: session.userId, nope: 1 })),
        }),
      200,
    ],
    [
      "an empty body (proto: an empty message)",
      () => withCall(getUser("proto", session.userId), { body: undefined }),
      400,
    ],
    [
      "an empty body (JSON)",
      () => withCall(getUser("json", session.userId), { body: undefined }),
      400,
    ],
    [
      "a gzip-compressed request (JSON)",
      () =>
        withCall(getUser("json", session.userId), {
          headers: { "content-encoding": "gzip" },
          body: gzipSync(JSON.stringify({ id: session.userId })),
        }),
      200,
    ],
    [
      "a gzip-compressed request (proto)",
      () =>
        withCall(getUser("proto", session.userId), {
          headers: { "content-encoding": "gzip" },
          body: gzipSync(
            toBinary(GetUserRequestSchema, create(GetUserRequestSchema, { id: session.userId })),
          ),
        }),
      200,
    ],
    [
      "content-encoding gzip on bytes that are not gzip",
      () => withCall(getUser("json", session.userId), { headers: { "content-encoding": "gzip" } }),
      400,
    ],
    [
      "content-encoding identity",
      () =>
        withCall(getUser("json", session.userId), {
          headers: { "content-encoding": "identity" },
        }),
      200,
    ],
    [
      "an unknown content-encoding (501, accept-encoding lists gzip,br)",
      () =>
        withCall(getUser("json", session.userId), { headers: { "content-encoding": "snappy" } }),
      501,
    ],
    [
      "accept-encoding: gzip on a small answer (left uncompressed)",
      () => withCall(getUser("json", session.userId), { headers: { "accept-encoding": "gzip" } }),
      200,
    ],
    [
      "a browser's accept-encoding on a small answer",
      () =>
        withCall(getUser("proto", session.userId), {
          headers: { "accept-encoding": "gzip, deflate, br, zstd" },
        }),
      200,
    ],
    [
      "accept-encoding: gzip on an answer over 1 KiB (compressed, JSON)",
      () => bigSend("json", "gzip"),
      200,
    ],
    [
      "accept-encoding: br on an answer over 1 KiB (compressed, proto)",
      () => bigSend("proto", "br"),
      200,
    ],
    [
      "accept-encoding: gzip on an error (under 1 KiB: left uncompressed)",
      () =>
        withCall(json(invalidRegistration), {
          path: REGISTER,
          headers: { "x-request-id": "diff-3", "accept-encoding": "gzip" },
        }),
      400,
    ],
    [
      "an invalid connect-timeout-ms",
      () =>
        withCall(getUser("json", session.userId), { headers: { "connect-timeout-ms": "soon" } }),
      400,
    ],
    [
      "a generous connect-timeout-ms",
      () =>
        withCall(getUser("proto", session.userId), {
          headers: { "connect-timeout-ms": "10000" },
        }),
      200,
    ],
    [
      "connect-timeout-ms: 0 (the deadline has passed on arrival)",
      () => withCall(getUser("json", session.userId), { headers: { "connect-timeout-ms": "0" } }),
      504,
    ],
    [
      "a deadline that passes while the handler waits",
      () => withCall(getUser("json", SLOW_ID), { headers: { "connect-timeout-ms": "100" } }),
      504,
    ],
    [
      "connect-protocol-version: 2 (not checked: requireConnectProtocolHeader is off)",
      () =>
        withCall(getUser("json", session.userId), {
          headers: { "connect-protocol-version": "2" },
        }),
      200,
    ],
    [
      "a public call: RegisterUser with every field invalid (JSON)",
      () =>
        withCall(json(invalidRegistration), {
          path: REGISTER,
          headers: { "x-request-id": "diff-3" },
        }),
      400,
    ],
    [
      "a public call: RegisterUser with every field invalid (proto)",
      () =>
        withCall(proto(RegisterUserRequestSchema, invalidRegistration), {
          path: REGISTER,
          headers: { "x-request-id": "diff-3" },
        }),
      400,
    ],
    [
      "RegisterUser of a taken username (ErrorInfo)",
      () =>
        withCall(
          json({
            username: session.username.toUpperCase(),
            email: "other@example.com",
            password: "long enough password",
          }),
          { path: REGISTER, headers: { "x-request-id": "diff-4" } },
        ),
      409,
    ],
    [
      "GET with the message in the query (declined)",
      () => ({
        method: "GET",
        path: `${GET_USER}?encoding=json&message=${encodeURIComponent(JSON.stringify({ id: session.userId }))}`,
        headers: authed(),
      }),
      200,
    ],
    [
      "GET of a method with side effects (declined: 405)",
      () => ({ method: "GET", path: `${REGISTER}?encoding=json&message=%7B%7D`, headers: {} }),
      405,
    ],
    [
      "a streaming content type on a unary method (declined: 415)",
      () =>
        withCall(getUser("proto", session.userId), {
          headers: { "content-type": "application/connect+proto" },
        }),
      415,
    ],
    [
      "an unsupported content type (declined: 415)",
      () =>
        withCall(getUser("json", session.userId), { headers: { "content-type": "text/plain" } }),
      415,
    ],
    [
      "an unknown method (declined: Fastify's 404)",
      () =>
        withCall(getUser("json", session.userId), {
          path: "/switchboard.user.v1.UserService/Nope",
        }),
      404,
    ],
    [
      "a POST with a query string (declined)",
      () => withCall(getUser("json", session.userId), { path: `${GET_USER}?x=1` }),
      200,
    ],
    [
      "PUT (declined: 405)",
      () => withCall(getUser("json", session.userId), { method: "PUT" }),
      405,
    ],
  ];

  for (const transport of ["h1", "h2"] as const) {
    for (const [name, make, status] of corpus) {
      it(`${transport}: ${name}: same answer (HTTP ${status})`, async () => {
        const [viaConnect, viaFast] = await both(transport, make());
        expect(viaConnect.status).toBe(status);
        expect(viaFast).toEqual(viaConnect);
      });
    }
  }

  it("the compressed answers really are compressed, with the same bytes", async () => {
    for (const [codec, encoding, transport] of [
      ["json", "gzip", "h1"],
      ["proto", "br", "h2"],
    ] as const) {
      const [a, b] = await both(transport, bigSend(codec, encoding));
      expect(a.status).toBe(200);
      expect(a.headers["content-encoding"]).toBe(encoding);
      expect(Number(a.headers["content-length"])).toBeLessThan(1024);
      expect(b).toEqual(a);
    }
  });

  it("several calls on one HTTP/1.1 keep-alive connection: same answers", async () => {
    const onOneConnection = async (url: string) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      const answers: Answer[] = [];
      const sockets = new Set<unknown>();
      try {
        for (const call of [
          getUser("json", session.userId),
          getUser("proto", UNKNOWN_ID),
          withCall(getUser("json", session.userId), { headers: { "content-encoding": "snappy" } }),
          withCall(getUser("json", session.userId), { body: Buffer.from("{nope") }),
          getUser("proto", session.userId),
        ]) {
          answers.push(
            await new Promise<Answer>((resolve, reject) => {
              const req = http.request(
                new URL(GET_USER, url),
                {
                  method: "POST",
                  agent,
                  headers: { ...call.headers, "content-length": String(call.body?.length ?? 0) },
                },
                (res) => {
                  sockets.add(res.socket);
                  const chunks: Buffer[] = [];
                  res.on("data", (c: Buffer) => chunks.push(c));
                  res.on("end", () =>
                    resolve(
                      answer(
                        res.statusCode ?? 0,
                        res.headers,
                        res.rawHeaders,
                        Buffer.concat(chunks),
                      ),
                    ),
                  );
                },
              );
              req.on("error", reject);
              req.end(call.body);
            }),
          );
        }
      } finally {
        agent.destroy();
      }
      expect(sockets.size).toBe(1);
      return answers;
    };
    diff.label("connect");
    const a = await onOneConnection(connect.url);
    diff.label("fast");
    const b = await onOneConnection(fast.url);
    expect(a.map((x) => x.status)).toEqual([200, 404, 501, 400, 200]);
    expect(b.map((x, i) => gated(a[i] as Answer, x))).toEqual(a);
  });

  it("Login: OK, wrong password, then the 4th attempt rate limited with QuotaFailure and RetryInfo", async () => {
    const login = (codec: "proto" | "json", password: string): Call => {
      const init = { username: session.username, password };
      return withCall(codec === "proto" ? proto(LoginRequestSchema, init) : json(init), {
        path: LOGIN,
        headers: { "x-request-id": "diff-login" },
      });
    };
    // registerAndLogin went to `connect` once: its limit is one call ahead,
    // which only the third, uncompared attempt can tell.
    const [okA, okB] = await both("h1", login("json", session.password));
    expect(okA.status).toBe(200);
    expect(maskTokens(okB)).toEqual(maskTokens(okA));
    const [okProtoA, okProtoB] = await both("h2", login("proto", session.password));
    expect(maskTokens(okProtoB)).toEqual(maskTokens(okProtoA));
    await both("h1", login("json", "not the password"));
    const [limitedA, limitedB] = await both("h2", login("json", "not the password"));
    expect(limitedA.status).toBe(429);
    const a = detailsApart(limitedA);
    const b = detailsApart(limitedB);
    expect(a.types).toContain("google.rpc.QuotaFailure");
    expect(a.types).toContain("google.rpc.RetryInfo");
    expect(b).toEqual(a);
  });

  it("Login with a wrong password: same answer", async () => {
    // A user of its own: the login limit is per IP, so this runs on the
    // TLS pair, which has not seen a Login yet.
    const [a, b] = await both(
      "h1",
      withCall(json({ username: session.username, password: "not the password" }), {
        path: LOGIN,
        headers: { "x-request-id": "diff-login" },
      }),
      true,
    );
    expect(a.status).toBe(401);
    expect(b).toEqual(a);
  });

  for (const transport of ["h1", "h2"] as const) {
    it(`${transport}: a client that goes away cancels the handler's signal (Canceled) on both`, async () => {
      diff.slowAborts.length = 0;
      const [a, b] = await both(
        transport,
        withCall(getUser("json", SLOW_ID), { cancelAfterMs: 100 }),
      );
      expect(a.end).toBe("cancelled");
      expect(b.end).toBe("cancelled");
      await expect.poll(() => diff.slowAborts.length).toBe(2);
      for (const { reason } of diff.slowAborts) {
        expect(ConnectError.from(reason).code).toBe(Code.Canceled);
      }
      expect(diff.slowAborts.map((s) => s.server)).toEqual(["connect", "fast"]);
    });
  }

  const tlsCorpus = corpus.filter(([name]) =>
    [
      "GetUser (proto)",
      "GetUser (JSON)",
      "GetUser of an unknown id (JSON)",
      "a body over MAX_MESSAGE_BYTES without content-length",
      "an unknown content-encoding (501, accept-encoding lists gzip,br)",
      "GET with the message in the query (declined)",
    ].includes(name),
  );
  for (const transport of ["h1", "h2"] as const) {
    for (const [name, make, status] of tlsCorpus) {
      it(`TLS ${transport}: ${name}: same answer (HTTP ${status})`, async () => {
        const [viaConnect, viaFast] = await both(transport, make(), true);
        expect(viaConnect.status).toBe(status);
        expect(viaFast).toEqual(viaConnect);
      });
    }
  }

  it("really compares two paths: only the connect servers' answers go through Fastify and connect-node", async () => {
    // Guards against the corpus passing because both servers went through
    // connect. HTTP/2: count responses written by the (req, res) compat
    // layer. HTTP/1.1 (whose responses both write with writeHead): see who
    // called writeHead.
    const h2proto = http2.Http2ServerResponse.prototype as unknown as {
      writeHead: (...args: unknown[]) => unknown;
    };
    const h1proto = http.ServerResponse.prototype as unknown as {
      writeHead: (...args: unknown[]) => unknown;
    };
    const h2original = h2proto.writeHead;
    const h1original = h1proto.writeHead;
    let compat = 0;
    const writers: string[] = [];
    h2proto.writeHead = function (this: unknown, ...args: unknown[]) {
      compat++;
      return h2original.apply(this, args);
    };
    h1proto.writeHead = function (this: unknown, ...args: unknown[]) {
      const stack = new Error().stack ?? "";
      writers.push(
        stack.includes("node-universal-handler")
          ? "connect-node"
          : stack.includes("connect-unary")
            ? "fast path"
            : "other",
      );
      return h1original.apply(this, args);
    };
    try {
      for (const tls of [false, true]) {
        const [viaConnect, viaFast] = targets(tls);
        for (const codec of ["proto", "json"] as const) {
          compat = 0;
          writers.length = 0;
          const call = getUser(codec, session.userId);
          expect((await h2Call(viaFast, call)).status).toBe(200);
          expect((await h1Call(viaFast, call)).status).toBe(200);
          expect(compat).toBe(0);
          expect(writers).toEqual(["fast path"]);
          expect((await h2Call(viaConnect, call)).status).toBe(200);
          expect((await h1Call(viaConnect, call)).status).toBe(200);
          expect(compat).toBe(1);
          // Over TLS, HTTP/1.1 goes through http2's allowHTTP1 server: its
          // responses are http.ServerResponse too.
          expect(writers).toEqual(["fast path", "connect-node"]);
        }
      }
    } finally {
      h2proto.writeHead = h2original;
      h1proto.writeHead = h1original;
    }
  });
});
