import http2 from "node:http2";
import { join } from "node:path";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatService, type RoomEvent } from "../gen/switchboard/chat/v1/chat_pb.js";
import { bearer, registerAndLogin, type Session } from "./support/auth.js";
import { ROOT, startTestServer, type TestServer } from "./support/server.js";

/** What a participant saw, in order: messages as "sender:text", presence as "+name"/"-name". */
type Seen = string[];

function describeEvent(event: RoomEvent | undefined): string | undefined {
  switch (event?.kind.case) {
    case "message":
      return `${event.kind.value.senderUsername}:${event.kind.value.text}`;
    case "userJoined":
      return `+${event.kind.value.username}`;
    case "userLeft":
      return `-${event.kind.value.username}`;
    default:
      return undefined;
  }
}

/** A browser-style participant: Subscribe (server stream) + Send (unary). */
function browserParticipant(transport: Transport, room: string) {
  const client = createClient(ChatService, transport);
  const seen: Seen = [];
  const ids: bigint[] = [];
  const controller = new AbortController();
  let failure: ConnectError | undefined;
  const running = (async () => {
    for await (const res of client.subscribe({ room }, { signal: controller.signal })) {
      const text = describeEvent(res.event);
      if (text) seen.push(text);
      if (res.event?.kind.case === "message") ids.push(res.event.kind.value.id);
    }
  })().catch((e: unknown) => {
    failure = ConnectError.from(e);
  });
  return {
    seen,
    ids,
    send: (text: string, clientMsgId = crypto.randomUUID()) =>
      client.send({ room, text, clientMsgId }),
    failure: () => failure,
    async stop() {
      controller.abort();
      await running;
    },
  };
}

/** The gRPC bidi participant, on @grpc/grpc-js (an independent implementation). */
function grpcJsParticipant(port: number, token: string, room: string) {
  const definition = protoLoader.loadSync("switchboard/chat/v1/chat.proto", {
    includeDirs: [join(ROOT, "proto"), join(ROOT, "node_modules/google-proto-files")],
    longs: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    switchboard: { chat: { v1: { ChatService: grpc.ServiceClientConstructor } } };
  };
  const client = new pkg.switchboard.chat.v1.ChatService(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const call = client.Chat(metadata) as grpc.ClientDuplexStream<unknown, GrpcChatResponse>;
  const seen: Seen = [];
  const acks: string[] = [];
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  call.on("error", () => undefined);
  call.on("data", (res: GrpcChatResponse) => {
    if (res.frame === "ack" && res.ack) acks.push(res.ack.clientMsgId);
    const event = res.frame === "event" ? res.event : undefined;
    if (event?.kind === "message" && event.message) {
      seen.push(`${event.message.senderUsername}:${event.message.text}`);
    } else if (event?.kind === "userJoined" && event.userJoined) {
      seen.push(`+${event.userJoined.username}`);
    } else if (event?.kind === "userLeft" && event.userLeft) {
      seen.push(`-${event.userLeft.username}`);
    }
  });
  call.write({ join: { room } });
  return {
    seen,
    acks,
    send(text: string, clientMsgId = crypto.randomUUID()) {
      call.write({ message: { room, clientMsgId, text } });
      return clientMsgId;
    },
    async leaveAndEnd() {
      call.write({ leave: { room } });
      call.end();
      const status = await ended;
      client.close();
      return status;
    },
  };
}

interface GrpcChatResponse {
  frame?: "event" | "ack" | "error";
  ack?: { clientMsgId: string };
  event?: {
    kind?: "message" | "userJoined" | "userLeft" | "presence";
    message?: { senderUsername: string; text: string };
    userJoined?: { username: string };
    userLeft?: { username: string };
  };
}

const messagesOf = (seen: Seen) => seen.filter((s) => s.includes(":"));

describe("ChatService across protocols", () => {
  let server: TestServer;
  let alice: Session;
  let bob: Session;
  beforeAll(async () => {
    server = await startTestServer();
    alice = await registerAndLogin(server.url, { username: "alice" });
    bob = await registerAndLogin(server.url, { username: "bob" });
  });
  afterAll(() => server.close());

  for (const [name, make] of [
    [
      "Connect",
      (url: string, token: string) =>
        createConnectTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [bearer(token)] }),
    ],
    [
      "gRPC-Web",
      (url: string, token: string) =>
        createGrpcWebTransport({ baseUrl: url, httpVersion: "1.1", interceptors: [bearer(token)] }),
    ],
  ] as const) {
    it(`lets a grpc-js bidi client and a ${name} Subscribe+Send client talk, in the same order, with join/leave`, async () => {
      const room = `room-${name.toLowerCase()}`;
      const browser = browserParticipant(make(server.url, alice.accessToken), room);
      await expect.poll(() => browser.seen).toContain("+alice");

      const native = grpcJsParticipant(server.port, bob.accessToken, room);
      await expect.poll(() => browser.seen).toContain("+bob");

      await browser.send("hi bob");
      const ackId = native.send("hi alice");
      await browser.send("how are you?");
      native.send("fine!");
      await expect.poll(() => messagesOf(browser.seen).length).toBe(4);
      await expect.poll(() => messagesOf(native.seen).length).toBe(4);
      await expect.poll(() => native.acks).toContain(ackId);
      // Same order for both; per-sender order is the send order.
      expect(messagesOf(native.seen)).toEqual(messagesOf(browser.seen));
      const fromBob = messagesOf(browser.seen).filter((m) => m.startsWith("bob:"));
      expect(fromBob).toEqual(["bob:hi alice", "bob:fine!"]);
      expect(browser.ids).toEqual([...browser.ids].sort((a, b) => Number(a - b)));

      const status = await native.leaveAndEnd();
      expect(status.code).toBe(grpc.status.OK);
      await expect.poll(() => browser.seen).toContain("-bob");
      await browser.stop();
    });
  }

  it("resumes a subscriber with after_id: every missed message exactly once", async () => {
    const room = "resume";
    const transport = createConnectTransport({
      baseUrl: server.url,
      httpVersion: "1.1",
      interceptors: [bearer(alice.accessToken)],
    });
    const first = browserParticipant(transport, room);
    await first.send("one");
    await first.send("two");
    await expect.poll(() => first.ids.length).toBe(2);
    const lastSeen = first.ids.at(-1)!;
    await first.stop();

    const sender = createClient(
      ChatService,
      createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(bob.accessToken)] }),
    );
    for (const text of ["three", "four", "five"]) {
      await sender.send({ room, text, clientMsgId: crypto.randomUUID() });
    }
    const client = createClient(ChatService, transport);
    const controller = new AbortController();
    const resumed: string[] = [];
    const running = (async () => {
      for await (const res of client.subscribe(
        { room, afterId: lastSeen },
        { signal: controller.signal },
      )) {
        if (res.event?.kind.case === "message") resumed.push(res.event.kind.value.text);
      }
    })().catch(() => undefined);
    await expect.poll(() => resumed.length).toBe(3);
    await sender.send({ room, text: "six", clientMsgId: crypto.randomUUID() });
    await expect.poll(() => resumed.length).toBe(4);
    controller.abort();
    await running;
    expect(resumed).toEqual(["three", "four", "five", "six"]);
  });

  it("stores a retried send with the same client_msg_id once and answers with the same message", async () => {
    const client = createClient(
      ChatService,
      createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(alice.accessToken)] }),
    );
    const clientMsgId = crypto.randomUUID();
    const a = await client.send({ room: "retries", text: "only once", clientMsgId });
    const b = await client.send({ room: "retries", text: "only once", clientMsgId });
    expect(b.message?.id).toBe(a.message?.id);
    const history = await client.history({ room: "retries" });
    expect(history.messages.map((m) => m.text)).toEqual(["only once"]);
  });

  it("refuses a too-long message with InvalidArgument naming the text field", async () => {
    const client = createClient(
      ChatService,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        interceptors: [bearer(alice.accessToken)],
      }),
    );
    const err = await client
      .send({ room: "limits", text: "x".repeat(2001), clientMsgId: "c1" })
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(err?.code).toBe(Code.InvalidArgument);
    expect(err?.rawMessage).toMatch(/^text: /);
  });
});

describe("a subscriber that never reads", () => {
  let server: TestServer;
  let alice: Session;
  beforeAll(async () => {
    server = await startTestServer({ env: { CHAT_SUBSCRIBER_BUFFER: "20" } });
    alice = await registerAndLogin(server.url, { username: "alice" });
  });
  afterAll(() => server.close());

  it("does not delay the others, is cut off with SUBSCRIBER_TOO_SLOW, and its queue is freed", async () => {
    const room = "slow";
    // A raw HTTP/2 Subscribe whose response is never read: once the flow
    // control windows fill, the server can write no more to it.
    const session = http2.connect(server.url, { settings: { initialWindowSize: 1024 } });
    const body = Buffer.from(JSON.stringify({ room }));
    const stalled = session.request({
      ":method": "POST",
      ":path": "/switchboard.chat.v1.ChatService/Subscribe",
      "content-type": "application/connect+json",
      authorization: `Bearer ${alice.accessToken}`,
    });
    const envelope = Buffer.alloc(5);
    envelope.writeUInt32BE(body.length, 1);
    stalled.end(Buffer.concat([envelope, body]));
    stalled.pause();
    await expect.poll(() => server.app.hub.stats().subscribers).toBe(1);

    const reader = browserParticipant(
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        interceptors: [bearer(alice.accessToken)],
      }),
      room,
    );
    await expect.poll(() => server.app.hub.stats().subscribers).toBe(2);
    const sender = createClient(
      ChatService,
      createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(alice.accessToken)] }),
    );
    const text = "m".repeat(1500);
    const started = Date.now();
    for (let i = 0; i < 120; i++) {
      await sender.send({ room, text: `${i} ${text}`, clientMsgId: `slow-${i}` });
      // Bounded memory: nobody's queue ever holds more than the buffer.
      expect(server.app.hub.stats().queued).toBeLessThanOrEqual(2 * 20 + 1);
    }
    await expect.poll(() => reader.ids.length, { timeout: 10_000 }).toBe(120);
    const deliveredIn = Date.now() - started;
    expect(deliveredIn).toBeLessThan(10_000);
    // The stalled subscriber was cut off and forgotten.
    await expect.poll(() => server.app.hub.stats().subscribers).toBe(1);
    expect(server.app.hub.stats().queued).toBeLessThanOrEqual(20);

    // What it would read, if it finally read, ends with the typed error.
    stalled.resume();
    const raw = await new Promise<string>((resolve) => {
      let all = "";
      stalled.on("data", (c: Buffer) => {
        all += c.toString("latin1");
      });
      stalled.on("end", () => resolve(all));
      stalled.on("close", () => resolve(all));
    });
    session.close();
    expect(raw).toContain("SUBSCRIBER_TOO_SLOW");
    expect(raw).toContain("resource_exhausted");
    expect(reader.failure()).toBeUndefined();
    await reader.stop();
  });
});
