import http2 from "node:http2";
import net from "node:net";
import { create, toBinary, toJsonString } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SubscribeRequestSchema } from "../gen/switchboard/chat/v1/chat_pb.js";
import { GetUserStreamRequestSchema } from "../gen/switchboard/user/v1/user_pb.js";
import { registerAndLogin, type Session } from "./support/auth.js";
import { envelope } from "./support/differential.js";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * A server stream whose client vanishes while the server waits for the
 * transport to drain (the client stopped reading: a closed browser tab, a
 * dead phone) must end: its open-stream slot returned, its access-log line
 * written, the handler stopped. connect-node's response writer waits for
 * 'drain' or 'error' only, and a response closed under backpressure emits
 * neither, so on connect's handler such a call never ended. Here, for every
 * protocol and HTTP version a stream can use.
 */

const GET_USER_STREAM = "/switchboard.user.v1.UserService/GetUserStream";

let server: TestServer;
let session: Session;
let reads = 0;
const logLines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  server = await startTestServer({
    env: { MAX_MESSAGE_BYTES: String(1 << 20), LOG_LEVEL: "info" },
    logLines,
    wrapStore: (store) => {
      const getUser = store.getUser.bind(store);
      store.getUser = (id, options) => {
        reads++;
        return getUser(id, options);
      };
      return store;
    },
  });
  session = await registerAndLogin(server.url, { username: "vanisher" });
});

afterAll(async () => {
  await server?.close();
});

/** 1000 copies of the caller's id: far more output than a paused client takes. */
const request = () => create(GetUserStreamRequestSchema, { ids: Array(1000).fill(session.userId) });

/** Waits until the handler stops making progress (the transport is full). */
async function untilStalled(): Promise<number> {
  let last = -1;
  for (let i = 0; i < 100; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    if (reads > 0 && reads === last) return reads;
    last = reads;
  }
  throw new Error("the stream never stalled");
}

function streamLogLines(): Array<Record<string, unknown>> {
  return logLines.filter((l) => l.procedure === "switchboard.user.v1.UserService/GetUserStream");
}

/** Checks that the vanished call ended: slot, log line, handler. */
async function expectReleased(logsBefore: number, readsAtStall: number) {
  await expect.poll(() => server.app.calls.openStreams(), { timeout: 5000 }).toBe(0);
  await expect.poll(() => streamLogLines().length, { timeout: 5000 }).toBe(logsBefore + 1);
  const line = streamLogLines().at(-1);
  expect(line?.code).not.toBe("ok");
  // The handler stopped: it did not go on to read all 1000 ids.
  await new Promise((resolve) => setTimeout(resolve, 200));
  expect(reads).toBeLessThan(1000);
  expect(reads).toBeLessThanOrEqual(readsAtStall + 2);
}

const h2Protocols = [
  { name: "gRPC", contentType: "application/grpc", json: false, enveloped: true },
  { name: "gRPC-Web", contentType: "application/grpc-web+proto", json: false, enveloped: true },
  {
    name: "Connect (streaming JSON)",
    contentType: "application/connect+json",
    json: true,
    enveloped: true,
  },
] as const;

describe("a server stream whose HTTP/2 client vanishes under backpressure", () => {
  for (const protocol of h2Protocols) {
    it(`ends on ${protocol.name}: slot released, access log written, handler stopped`, async () => {
      reads = 0;
      const logsBefore = streamLogLines().length;
      const client = http2.connect(server.url, { settings: { initialWindowSize: 1024 } });
      client.on("error", () => undefined);
      const stream = client.request({
        ":method": "POST",
        ":path": GET_USER_STREAM,
        "content-type": protocol.contentType,
        te: "trailers",
        authorization: `Bearer ${session.accessToken}`,
      });
      stream.on("error", () => undefined);
      stream.pause();
      const message = protocol.json
        ? Buffer.from(toJsonString(GetUserStreamRequestSchema, request()))
        : Buffer.from(toBinary(GetUserStreamRequestSchema, request()));
      stream.end(envelope(message));
      await expect.poll(() => server.app.calls.openStreams()).toBe(1);
      const atStall = await untilStalled();
      expect(atStall).toBeLessThan(1000);
      // The client disappears: the session and its socket are torn down,
      // no RST_STREAM for the call first.
      client.destroy();
      await expectReleased(logsBefore, atStall);
    });
  }
});

describe("a chat catch-up whose HTTP/1.1 client vanishes under backpressure (a closed browser tab)", () => {
  const ROOM = "catchup";
  beforeAll(async () => {
    // 5,000 messages of 2,000 characters: ~10 MB of catch-up, more than the
    // loopback socket buffers hold for a client that reads nothing.
    const text = "m".repeat(2000);
    for (let i = 0; i < 5000; i++) {
      await server.store.appendMessage({
        room: ROOM,
        senderId: session.userId,
        senderUsername: session.username,
        text,
        clientMsgId: `seed-${i}`,
        createTime: new Date(),
      });
    }
  }, 120_000);

  const subscribeLines = () =>
    logLines.filter((l) => l.procedure === "switchboard.chat.v1.ChatService/Subscribe");

  for (const protocol of [
    { name: "gRPC-Web", contentType: "application/grpc-web+proto", json: false },
    { name: "Connect (streaming JSON)", contentType: "application/connect+json", json: true },
  ] as const) {
    it(`ends on ${protocol.name}: slot released and access log written`, async () => {
      const logsBefore = subscribeLines().length;
      const subscribe = create(SubscribeRequestSchema, { room: ROOM, afterId: 0n });
      const body = envelope(
        protocol.json
          ? Buffer.from(toJsonString(SubscribeRequestSchema, subscribe))
          : Buffer.from(toBinary(SubscribeRequestSchema, subscribe)),
      );
      // A raw socket that sends the request and then reads nothing.
      const socket = net.connect(server.port, "127.0.0.1");
      socket.on("error", () => undefined);
      await new Promise((resolve) => socket.once("connect", resolve));
      socket.pause();
      socket.write(
        `POST /switchboard.chat.v1.ChatService/Subscribe HTTP/1.1\r\nhost: 127.0.0.1\r\n` +
          `content-type: ${protocol.contentType}\r\n` +
          `authorization: Bearer ${session.accessToken}\r\n` +
          `content-length: ${body.byteLength}\r\n\r\n`,
      );
      socket.write(body);
      await expect.poll(() => server.app.calls.openStreams()).toBe(1);
      // Let the server fill the socket and wait for it to drain.
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(server.app.calls.openStreams()).toBe(1);
      socket.destroy();
      await expect.poll(() => server.app.calls.openStreams(), { timeout: 5000 }).toBe(0);
      await expect.poll(() => subscribeLines().length, { timeout: 5000 }).toBe(logsBefore + 1);
    });
  }
});
