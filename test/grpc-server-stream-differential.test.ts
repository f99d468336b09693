import http2 from "node:http2";
import { gunzipSync, gzipSync } from "node:zlib";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckRequestSchema } from "../gen/health/v1/health_pb.js";
import {
  SendRequestSchema,
  SubscribeRequestSchema,
  SubscribeResponseSchema,
} from "../gen/switchboard/chat/v1/chat_pb.js";
import {
  GetUserStreamRequestSchema,
  WatchUsersRequestSchema,
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
 * The gRPC server-streaming fast path (server/src/protocol/grpc-server-stream.ts)
 * against connect's own gRPC handler: servers built by the same `build`, on
 * the same store and signing key, one with UNARY_FAST_PATH=off (every fast
 * path off). Every call of the corpus goes to both over raw HTTP/2 frames,
 * and what comes back — HTTP status, response headers, every message's
 * envelope (flags and bytes), trailers, grpc-status-details-bin, how the
 * stream ended — must be the same.
 *
 * Normalised before comparing (and only these): the `date` header (Node's
 * http2 adds it; its value moves on), the duration inside `server-timing`,
 * generated request ids, and — for a chat message sent live during the
 * call — the message's id, creation time and client id (each server
 * stores its own message).
 */

interface Answer {
  status: number;
  headers: Record<string, string>;
  /** Every response envelope as "flags:base64(data)". */
  messages: string[];
  /** Bytes after the last complete envelope (should be none). */
  rest: string;
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
  /** Reset the stream with CANCEL once this many messages have arrived. */
  readonly cancelAfterMessages?: number;
  /** Called with the messages received so far ("flags:base64"), after each one; true cancels. */
  readonly onMessage?: (messages: readonly string[]) => boolean | undefined;
}

const GET_USER_STREAM = "/switchboard.user.v1.UserService/GetUserStream";
const WATCH_USERS = "/switchboard.user.v1.UserService/WatchUsers";
const SUBSCRIBE = "/switchboard.chat.v1.ChatService/Subscribe";
const HEALTH_WATCH = "/grpc.health.v1.Health/Watch";
const SEND = "/switchboard.chat.v1.ChatService/Send";
const UNKNOWN_ID = "00000000-0000-7000-8000-000000000000";

const userStream = (...ids: string[]) =>
  toBinary(GetUserStreamRequestSchema, create(GetUserStreamRequestSchema, { ids }));
const watchUsers = (afterCursor = "") =>
  toBinary(WatchUsersRequestSchema, create(WatchUsersRequestSchema, { afterCursor }));
const subscribe = (room: string, afterId = 0n) =>
  toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { room, afterId }));
const healthWatch = (service: string) =>
  toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service }));

/** Splits a response body into envelopes ("flags:base64") and what is left. */
function split(body: Buffer): { messages: string[]; rest: Buffer } {
  const messages: string[] = [];
  let offset = 0;
  while (body.byteLength - offset >= 5) {
    const length = body.readUInt32BE(offset + 1);
    if (body.byteLength - offset - 5 < length) break;
    const data = body.subarray(offset + 5, offset + 5 + length);
    messages.push(`${body[offset]}:${data.toString("base64")}`);
    offset += 5 + length;
  }
  return { messages, rest: body.subarray(offset) };
}

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
    let seen = 0;
    stream.on("response", (h) => {
      headers = h;
    });
    stream.on("trailers", (t) => {
      trailers = t;
      // A request left open ends when the answer has: as gRPC clients do.
      if (call.keepOpen) setImmediate(() => stream.close());
    });
    stream.on("data", (c: Buffer) => {
      chunks.push(c);
      const { messages } = split(Buffer.concat(chunks));
      for (; seen < messages.length; ) {
        seen++;
        const cancel = call.onMessage?.(messages.slice(0, seen)) === true;
        if (cancel || seen === call.cancelAfterMessages) {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          break;
        }
      }
    });
    stream.on("error", () => undefined);
    stream.on("close", () => {
      session.close();
      // Who resets a request left open first (server or client) is a race.
      const rstCode = call.keepOpen ? 0 : (stream.rstCode ?? 0);
      resolve(normalise(headers, Buffer.concat(chunks), trailers, rstCode));
    });
    if (call.body) stream.write(call.body);
    if (!call.keepOpen) stream.end();
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
  const { messages, rest } = split(body);
  const detailsBin = trailers["grpc-status-details-bin"] ?? headers["grpc-status-details-bin"];
  const answer: Answer = {
    status: Number(h[":status"] ?? 0),
    headers,
    messages,
    rest: rest.toString("base64"),
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

/** The grpc-status of an answer (trailers, or headers for a trailers-only one). */
const statusOf = (a: Answer) =>
  a.trailers["grpc-status"] ?? a.headers["grpc-status"] ?? `none (HTTP ${a.status})`;

/** A chat message stored during the call has a different id and time on each server. */
function withoutChatIds(answer: Answer): Answer {
  return {
    ...answer,
    messages: answer.messages.map((m) => {
      const [flags, data] = m.split(":") as [string, string];
      let bytes = Buffer.from(data, "base64");
      if (flags === "1") bytes = gunzipSync(bytes);
      const res = fromBinary(SubscribeResponseSchema, bytes);
      if (res.event?.kind.case === "message") {
        res.event.kind.value.id = 0n;
        res.event.kind.value.createTime = undefined;
        res.event.kind.value.clientMsgId = "<per run>";
      }
      return `${flags}:${Buffer.from(toBinary(SubscribeResponseSchema, res)).toString("base64")}`;
    }),
  };
}

describe("the gRPC server-streaming fast path answers exactly as connect's gRPC handler", () => {
  let diff: Differential;
  let connect: TestServer;
  let fast: TestServer;
  let session: Session;
  let other: Session;
  let expired: string;

  beforeAll(async () => {
    diff = await openDifferential();
    connect = await diff.start("connect");
    fast = await diff.start("engine");
    session = await registerAndLogin(connect.url);
    other = await registerAndLogin(connect.url, { username: `other${Date.now() % 1e6}` });
    expired = await diff.expiredToken(session);
    // A stored message longer than compressMinBytes, replayed by Subscribe.
    const stored = await rawCall(connect.url, {
      path: SEND,
      body: envelope(
        toBinary(
          SendRequestSchema,
          create(SendRequestSchema, {
            room: "diff-long",
            clientMsgId: "long-1",
            text: "l".repeat(1500),
          }),
        ),
      ),
      headers: { authorization: `Bearer ${session.accessToken}` },
    });
    expect(statusOf(stored)).toBe("0");
  });

  afterAll(() => diff?.close());

  /** Sends `call` to connect's handler, then to the fast path; both answers. */
  async function both(make: (server: TestServer) => Call): Promise<[Answer, Answer]> {
    diff.label("connect");
    const a = await rawCall(connect.url, make(connect));
    diff.label("fast");
    const b = await rawCall(fast.url, make(fast));
    return [a, b];
  }

  /** Waits until neither server has a stream open (their handlers have ended). */
  async function streamsReleased(): Promise<void> {
    await expect.poll(() => connect.app.calls.openStreams()).toBe(0);
    await expect.poll(() => fast.app.calls.openStreams()).toBe(0);
  }

  const authed = (extra: Record<string, string> = {}) => ({
    authorization: `Bearer ${session.accessToken}`,
    "x-request-id": "diff-1",
    ...extra,
  });

  const corpus: Array<[string, () => Call, string]> = [
    [
      "GetUserStream of several users, in order, one twice",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId, other.userId, session.userId)),
        headers: authed(),
      }),
      "0",
    ],
    [
      "GetUserStream without x-request-id (one is generated)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(other.userId)),
        headers: { authorization: `Bearer ${session.accessToken}` },
      }),
      "0",
    ],
    [
      "GetUserStream with unknown and odd ids (NOT_FOUND items)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(UNKNOWN_ID, session.userId, "nope")),
        headers: authed(),
      }),
      "0",
    ],
    [
      "GetUserStream with no ids (BadRequest from validation)",
      () => ({ path: GET_USER_STREAM, body: envelope(userStream()), headers: authed() }),
      "3",
    ],
    [
      "GetUserStream with an empty and a too-long id (BadRequest)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream("", "x".repeat(65))),
        headers: authed(),
      }),
      "3",
    ],
    [
      "a bug in the store before the first message (Internal with the request id)",
      () => ({ path: GET_USER_STREAM, body: envelope(userStream(BUG_ID)), headers: authed() }),
      "13",
    ],
    [
      "a bug in the store after two messages (error in the trailers)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId, other.userId, BUG_ID)),
        headers: authed(),
      }),
      "13",
    ],
    [
      "no token",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: { "x-request-id": "diff-2" },
      }),
      "16",
    ],
    [
      "a garbage token",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: authed({ authorization: "Bearer not.a.jwt" }),
      }),
      "16",
    ],
    [
      "an expired token",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: authed({ authorization: `Bearer ${expired}` }),
      }),
      "16",
    ],
    [
      "a message over MAX_MESSAGE_BYTES",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0)),
        headers: authed(),
      }),
      "8",
    ],
    [
      "an oversized message announced by a request that stays open",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(Buffer.alloc(10), 0, 1 << 20),
        headers: authed(),
        keepOpen: true,
      }),
      "8",
    ],
    [
      "an oversized message without a token (auth is checked before the body is read)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(Buffer.alloc(MAX_MESSAGE_BYTES + 1, 0)),
        headers: { "x-request-id": "diff-3" },
      }),
      "16",
    ],
    [
      "bytes that are not a GetUserStreamRequest",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(Buffer.from([0x0a, 0xff, 0xff])),
        headers: authed(),
      }),
      "13",
    ],
    [
      "no message at all",
      () => ({ path: GET_USER_STREAM, body: undefined, headers: authed() }),
      "12",
    ],
    [
      "two messages",
      () => ({
        path: GET_USER_STREAM,
        body: Buffer.concat([
          envelope(userStream(session.userId)),
          envelope(userStream(other.userId)),
        ]),
        headers: authed(),
      }),
      "12",
    ],
    [
      "a message and a second one that is not a request (parsed before it is refused)",
      () => ({
        path: GET_USER_STREAM,
        body: Buffer.concat([
          envelope(userStream(session.userId)),
          envelope(Buffer.from([0x0a, 0xff, 0xff])),
        ]),
        headers: authed(),
      }),
      "13",
    ],
    [
      "an incomplete envelope",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)).subarray(0, 10),
        headers: authed(),
      }),
      "3",
    ],
    [
      "a message and an incomplete second envelope",
      () => ({
        path: GET_USER_STREAM,
        body: Buffer.concat([envelope(userStream(session.userId)), Buffer.from([0, 0])]),
        headers: authed(),
      }),
      "3",
    ],
    [
      "a lone 5-byte prefix (connect's decoder counts only bytes after it)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(Buffer.alloc(0), 0, 20),
        headers: authed(),
      }),
      "12",
    ],
    [
      "a message and a lone 5-byte prefix",
      () => ({
        path: GET_USER_STREAM,
        body: Buffer.concat([
          envelope(userStream(session.userId)),
          envelope(Buffer.alloc(0), 0, 20),
        ]),
        headers: authed(),
      }),
      "0",
    ],
    [
      "a gzip-compressed request",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(gzipSync(userStream(session.userId)), 1),
        headers: authed({ "grpc-encoding": "gzip", "grpc-accept-encoding": "gzip" }),
      }),
      "0",
    ],
    [
      "a compressed request without grpc-encoding",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(gzipSync(userStream(session.userId)), 1),
        headers: authed(),
      }),
      "13",
    ],
    [
      "an unknown grpc-encoding (raised when the request is read, after auth)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: authed({ "grpc-encoding": "snappy" }),
      }),
      "12",
    ],
    [
      "an unknown grpc-encoding and no token (auth wins)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: { "grpc-encoding": "snappy", "x-request-id": "diff-4" },
      }),
      "16",
    ],
    [
      "an invalid grpc-timeout",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: authed({ "grpc-timeout": "soon" }),
      }),
      "3",
    ],
    [
      "a generous grpc-timeout",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId, other.userId)),
        headers: authed({ "grpc-timeout": "10S" }),
      }),
      "0",
    ],
    [
      "a deadline that passes before the first message",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(SLOW_ID)),
        headers: authed({ "grpc-timeout": "100m" }),
      }),
      "4",
    ],
    [
      "a deadline that passes after a message",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId, SLOW_ID)),
        headers: authed({ "grpc-timeout": "150m" }),
      }),
      "4",
    ],
    [
      "WatchUsers: every user, then the deadline passes while it waits for new ones",
      () => ({
        path: WATCH_USERS,
        body: envelope(watchUsers()),
        headers: authed({ "grpc-timeout": "300m" }),
      }),
      "4",
    ],
    [
      "WatchUsers with a cursor it never issued (the handler fails before a message)",
      () => ({
        path: WATCH_USERS,
        body: envelope(watchUsers("bm90IGEgY3Vyc29y")),
        headers: authed(),
      }),
      "3",
    ],
    [
      "Health/Watch of the server: SERVING, then the deadline",
      () => ({
        path: HEALTH_WATCH,
        body: envelope(healthWatch("")),
        headers: { "grpc-timeout": "200m", "x-request-id": "diff-5" },
      }),
      "4",
    ],
    [
      "Health/Watch of an unknown service: SERVICE_UNKNOWN, then the deadline",
      () => ({
        path: HEALTH_WATCH,
        body: envelope(healthWatch("nope.Nope")),
        headers: { "grpc-timeout": "200m" },
      }),
      "4",
    ],
    [
      "Subscribe with response compression: presence, a replayed 1.5 kB message (gzip), deadline",
      () => ({
        path: SUBSCRIBE,
        body: envelope(subscribe("diff-long")),
        headers: authed({ "grpc-accept-encoding": "gzip", "grpc-timeout": "300m" }),
      }),
      "4",
    ],
    [
      "Subscribe to an invalid room name (BadRequest)",
      () => ({ path: SUBSCRIBE, body: envelope(subscribe("No Such Room!")), headers: authed() }),
      "3",
    ],
    [
      "gRPC with JSON (declined by the fast path)",
      () => ({
        path: GET_USER_STREAM,
        body: envelope(Buffer.from(JSON.stringify({ ids: [session.userId] }))),
        headers: authed({ "content-type": "application/grpc+json" }),
      }),
      "0",
    ],
  ];

  for (const [name, make, code] of corpus) {
    it(`${name}: same answer (grpc-status ${code})`, async () => {
      const [viaConnect, viaFast] = await both(make);
      expect(statusOf(viaConnect)).toBe(code);
      expect(viaFast).toEqual(viaConnect);
    });
  }

  it("every corpus call left no stream open on either server", async () => {
    await streamsReleased();
  });

  it("WatchUsers cancelled by the client mid-stream: same messages, the stream is released", async () => {
    const [a, b] = await both(() => ({
      path: WATCH_USERS,
      body: envelope(watchUsers()),
      headers: authed(),
      cancelAfterMessages: 1,
    }));
    expect(a.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(a.messages.length).toBeGreaterThanOrEqual(1);
    // The client resets after the first message; more may be in flight.
    const received = (x: Answer) => ({ ...x, messages: x.messages.slice(0, 1), rest: "" });
    expect(received(b)).toEqual(received(a));
    await streamsReleased();
  });

  it("a client that resets the stream cancels the handler's signal (Canceled) on both", async () => {
    diff.slowAborts.length = 0;
    const [a, b] = await both(() => ({
      path: GET_USER_STREAM,
      body: envelope(userStream(session.userId, SLOW_ID)),
      headers: authed(),
      cancelAfterMessages: 1,
    }));
    expect(b).toEqual(a);
    await expect.poll(() => diff.slowAborts.length).toBe(2);
    for (const { reason } of diff.slowAborts) {
      expect((reason as { code?: unknown }).code).toBe(1 /* Canceled */);
    }
    expect(diff.slowAborts.map((s) => s.server)).toEqual(["connect", "fast"]);
    await streamsReleased();
  });

  it("Subscribe receives a message another call sends; cancelling releases the subscription", async () => {
    const room = `diff-live-${Date.now() % 1e6}`;
    const sends: Array<Promise<Answer>> = [];
    const sendOn = (server: TestServer, clientMsgId: string) =>
      sends.push(
        rawCall(server.url, {
          path: SEND,
          body: envelope(
            toBinary(
              SendRequestSchema,
              create(SendRequestSchema, { room, clientMsgId, text: "hello from another call" }),
            ),
          ),
          headers: { authorization: `Bearer ${other.accessToken}` },
        }),
      );
    const eventOf = (message: string) =>
      fromBinary(SubscribeResponseSchema, Buffer.from(message.split(":")[1] as string, "base64"))
        .event;
    const kindOf = (message: string) => eventOf(message)?.kind.case;
    let sent = 0;
    // Each run resumes after the newest message (the previous run's), so
    // the stored one is not replayed: both see only their own live message.
    let afterId = 0n;
    const [a, b] = await both((server) => ({
      path: SUBSCRIBE,
      body: envelope(subscribe(room, afterId)),
      headers: authed(),
      // Once the subscription is live (the presence snapshot, then its own
      // join), someone else sends; the call ends when that message arrives.
      onMessage: (messages) => {
        const event = eventOf(messages.at(-1) as string);
        if (event?.kind.case === "userJoined") sendOn(server, `live-${++sent}`);
        if (event?.kind.case !== "message") return false;
        afterId = event.kind.value.id;
        return true;
      },
    }));
    for (const send of await Promise.all(sends)) expect(statusOf(send)).toBe("0");
    expect(a.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    expect(a.messages.map(kindOf).at(-1)).toBe("message");
    expect(withoutChatIds(b)).toEqual(withoutChatIds(a));
    await expect.poll(() => connect.app.hub.stats().subscribers).toBe(0);
    await expect.poll(() => fast.app.hub.stats().subscribers).toBe(0);
    await streamsReleased();
  });

  it("fan-out: every subscriber of a room gets each message's own bytes (a shared, frozen response is serialized once, never reused for the next)", async () => {
    const room = `diff-fan-${Date.now() % 1e6}`;
    const client = http2.connect(fast.url);
    const texts = ["first message", "second, longer message", "third"];
    const subscriber = () =>
      new Promise<string[]>((resolve, reject) => {
        const req = client.request({
          ":method": "POST",
          ":path": SUBSCRIBE,
          "content-type": "application/grpc",
          te: "trailers",
          ...authed(),
        });
        let buffered = Buffer.alloc(0);
        const got: string[] = [];
        req.on("data", (chunk: Buffer) => {
          buffered = Buffer.concat([buffered, chunk]);
          while (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
            const bytes = buffered.subarray(5, 5 + buffered.readUInt32BE(1));
            buffered = buffered.subarray(5 + bytes.length);
            const kind = fromBinary(SubscribeResponseSchema, bytes).event?.kind;
            if (kind?.case !== "message") continue;
            got.push(kind.value.text);
            if (got.length === texts.length) {
              req.close(http2.constants.NGHTTP2_CANCEL);
              resolve(got);
            }
          }
        });
        req.on("error", reject);
        req.end(envelope(subscribe(room)));
      });
    const subscribers = [subscriber(), subscriber(), subscriber()];
    await expect.poll(() => fast.app.hub.stats().subscribers).toBe(3);
    for (const [i, text] of texts.entries()) {
      const sent = await rawCall(fast.url, {
        path: SEND,
        body: envelope(
          toBinary(
            SendRequestSchema,
            create(SendRequestSchema, { room, clientMsgId: `fan-${i}`, text }),
          ),
        ),
        headers: { authorization: `Bearer ${other.accessToken}` },
      });
      expect(statusOf(sent)).toBe("0");
    }
    for (const got of await Promise.all(subscribers)) expect(got).toEqual(texts);
    client.close();
    await expect.poll(() => fast.app.hub.stats().subscribers).toBe(0);
  });

  /**
   * A GetUserStream of 1000 ids on a fast-path server that accepts them,
   * from a client that does not read (a 1 KiB window); `reads()` counts the
   * store reads of the seeded user since. Restores the store on `done()`.
   */
  async function pausedUserStream() {
    const ids = Array.from({ length: 1000 }, () => session.userId);
    let reads = 0;
    const realGetUser = diff.store.getUser;
    diff.store.getUser = (id, options) => {
      if (id === session.userId) reads++;
      return realGetUser.call(diff.store, id, options);
    };
    // 1000 ids do not fit in the corpus servers' MAX_MESSAGE_BYTES.
    const roomy = await diff.start("engine", { MAX_MESSAGE_BYTES: String(1 << 20) });
    const client = http2.connect(roomy.url, { settings: { initialWindowSize: 1024 } });
    const stream = client.request({
      ":method": "POST",
      ":path": GET_USER_STREAM,
      "content-type": "application/grpc",
      te: "trailers",
      ...authed(),
    });
    stream.pause();
    stream.end(envelope(userStream(...ids)));
    return {
      roomy,
      client,
      stream,
      reads: () => reads,
      done: () => {
        client.close();
        diff.store.getUser = realGetUser;
      },
    };
  }

  it("a stream the client does not read holds the handler back (backpressure), then completes", async () => {
    const { stream, reads, done } = await pausedUserStream();
    try {
      await expect.poll(reads).toBeGreaterThan(0);
      await new Promise((resolve) => setTimeout(resolve, 300));
      // A window of 1 KiB and the stream's write buffer hold a few hundred
      // bytes of ~130-byte messages: far fewer than 1000 were produced.
      expect(reads()).toBeLessThan(400);
      const trailers = new Promise<http2.IncomingHttpHeaders>((resolve) =>
        stream.on("trailers", resolve),
      );
      const chunks: Buffer[] = [];
      stream.on("data", (c: Buffer) => chunks.push(c));
      stream.resume();
      expect((await trailers)["grpc-status"]).toBe("0");
      await new Promise((resolve) => stream.on("close", resolve));
      expect(split(Buffer.concat(chunks)).messages).toHaveLength(1000);
      // 1000 by the handler, and one more when the auth check had to look
      // the caller up (its cache of known users is per server).
      expect(reads()).toBeGreaterThanOrEqual(1000);
      expect(reads()).toBeLessThanOrEqual(1001);
    } finally {
      done();
    }
  });

  it("a client that stops reading and then resets: the handler is stopped and the stream released", async () => {
    const { roomy, stream, reads, done } = await pausedUserStream();
    try {
      await expect.poll(() => roomy.app.calls.openStreams()).toBe(1);
      await expect.poll(reads).toBeGreaterThan(0);
      await new Promise((resolve) => setTimeout(resolve, 200));
      stream.close(http2.constants.NGHTTP2_CANCEL);
      await expect.poll(() => roomy.app.calls.openStreams()).toBe(0);
      const atReset = reads();
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(reads()).toBeLessThanOrEqual(atReset + 1);
      expect(reads()).toBeLessThan(400);
    } finally {
      done();
    }
  });

  it("a rate-limited stream: ResourceExhausted with QuotaFailure and RetryInfo on both", async () => {
    const limitedConnect = await diff.start("connect", { RATE_LIMIT_USER: "2/60" });
    const limitedFast = await diff.start("engine", { RATE_LIMIT_USER: "2/60" });
    const call = (server: TestServer) =>
      rawCall(server.url, {
        path: GET_USER_STREAM,
        body: envelope(userStream(session.userId)),
        headers: authed(),
      });
    for (let i = 0; i < 2; i++) {
      const [okA, okB] = [await call(limitedConnect), await call(limitedFast)];
      expect(okB).toEqual(okA);
      expect(statusOf(okA)).toBe("0");
    }
    const limitedA = await call(limitedConnect);
    const limitedB = await call(limitedFast);
    expect(statusOf(limitedA)).toBe("8");
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

  it("really compares two paths: only the connect server's streams go through Node's compat layer", async () => {
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
      const calls: Call[] = [
        { path: GET_USER_STREAM, body: envelope(userStream(session.userId)), headers: authed() },
        {
          path: WATCH_USERS,
          body: envelope(watchUsers()),
          headers: authed({ "grpc-timeout": "100m" }),
        },
        {
          path: HEALTH_WATCH,
          body: envelope(healthWatch("")),
          headers: { "grpc-timeout": "100m" },
        },
        {
          path: SUBSCRIBE,
          body: envelope(subscribe("diff-long")),
          headers: authed({ "grpc-timeout": "100m" }),
        },
      ];
      for (const call of calls) {
        const answer = await rawCall(fast.url, call);
        // Served, and the (lower-case) grpc-timeout honoured.
        expect(statusOf(answer)).toBe(call.path === GET_USER_STREAM ? "0" : "4");
      }
      expect(compat).toBe(0);
      for (const call of calls) await rawCall(connect.url, call);
      expect(compat).toBe(calls.length);
    } finally {
      proto.writeHead = original;
    }
  });
});

describe("shutdown during a gRPC server stream, with and without the fast path", () => {
  // Shutdown closes the store, so each server gets a store of its own (and
  // users of its own): the answers are compared but for the message bytes.
  async function answerDuringShutdown(engine: "engine" | "connect"): Promise<Answer> {
    const own = await openDifferential();
    try {
      const server = await own.start(engine);
      const user = await registerAndLogin(server.url, { username: "shutdown" });
      let closing: Promise<void> | undefined;
      const answer = await rawCall(server.url, {
        path: WATCH_USERS,
        body: envelope(watchUsers()),
        headers: { authorization: `Bearer ${user.accessToken}`, "x-request-id": "diff-9" },
        // Once the stream is open (its first user arrived), shut down.
        onMessage: () => {
          closing ??= server.close();
          return false;
        },
      });
      await closing;
      return answer;
    } finally {
      await own.close().catch(() => undefined);
    }
  }

  it("ends an open WatchUsers with the same Unavailable trailers", async () => {
    const a = await answerDuringShutdown("connect");
    const b = await answerDuringShutdown("engine");
    expect(statusOf(a)).toBe("14");
    expect(a.trailers["grpc-message"]).toBe("server%20is%20shutting%20down");
    expect(a.messages).toHaveLength(1);
    expect({ ...b, messages: b.messages.length }).toEqual({ ...a, messages: a.messages.length });
  });
});
