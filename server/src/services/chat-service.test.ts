import type { MessageInitShape } from "@bufbuild/protobuf";
import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Interceptor,
} from "@connectrpc/connect";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../../../gen/google/rpc/error_details_pb.js";
import {
  type ChatRequestSchema,
  type ChatResponse,
  ChatService,
  type RoomEvent,
} from "../../../gen/switchboard/chat/v1/chat_pb.js";
import { LocalBus } from "../chat/bus.js";
import { createChatLimiter } from "../chat/chat-limiter.js";
import { collect, openChatTestStore, sleep } from "../chat/chat-test-support.js";
import { EventQueue } from "../chat/event-queue.js";
import { ChatHub } from "../chat/hub.js";
import { LocalPresence } from "../chat/presence.js";
import { kAuth } from "../context.js";
import type { Store, UserRecord } from "../storage/store.js";
import * as rules from "../validation/chat-rules.js";
import { chatRequestExemptions, chatRequestSchemas } from "../validation/chat-rules.js";
import { violations } from "../validation/validate.js";
import { requestRules, validationInterceptor } from "../validation/validation-interceptor.js";
import { createChatService } from "./chat-service.js";

type ChatRequestInit = MessageInitShape<typeof ChatRequestSchema>;

let store: Store;
let cleanup: () => Promise<void>;
let users: UserRecord[];
let alice: UserRecord;
let bob: UserRecord;
let carol: UserRecord;
let hub: ChatHub;
let service: ReturnType<typeof createChatService>;

interface Setup {
  readonly subscriberBuffer?: number;
  readonly streamBuffer?: number;
  readonly chatLimit?: { points: number; durationSeconds: number };
}

async function setup(options: Setup = {}): Promise<void> {
  await hub?.close();
  hub = new ChatHub({
    store,
    bus: new LocalBus(),
    presence: new LocalPresence(),
    subscriberBuffer: options.subscriberBuffer ?? 512,
    logger: pino({ level: "silent" }),
  });
  service = createChatService({
    store,
    hub,
    logger: pino({ level: "silent" }),
    chatLimiter: createChatLimiter({
      limit: options.chatLimit ?? { points: 1000, durationSeconds: 60 },
    }),
    ...(options.streamBuffer ? { streamBuffer: options.streamBuffer } : {}),
  });
}

beforeEach(async () => {
  const opened = await openChatTestStore(["alice", "bob", "carol"]);
  store = opened.store;
  cleanup = opened.cleanup;
  users = opened.users;
  [alice, bob, carol] = users as [UserRecord, UserRecord, UserRecord];
  await setup();
});
afterEach(async () => {
  await hub.close();
  await cleanup();
});

/** Stands in for the auth interceptor: the caller named by a test header. */
const fakeAuth: Interceptor = (next) => async (req) => {
  const user = users.find((u) => u.id === req.header.get("x-test-user"));
  if (user) {
    req.contextValues.set(kAuth, {
      userId: user.id,
      username: user.username,
      roles: [],
      sessionId: "s",
    });
  }
  return next(req);
};

/** An in-memory ChatService client calling as `user` (anonymous without). */
function clientFor(user?: UserRecord) {
  const asUser: Interceptor = (next) => async (req) => {
    if (user) req.header.set("x-test-user", user.id);
    return next(req);
  };
  return createClient(
    ChatService,
    createRouterTransport(({ service: register }) => register(ChatService, service), {
      transport: { interceptors: [asUser] },
      router: {
        interceptors: [
          fakeAuth,
          validationInterceptor(requestRules(chatRequestSchemas, chatRequestExemptions)),
        ],
      },
    }),
  );
}

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

function describeEvent(event: RoomEvent | undefined): string {
  switch (event?.kind.case) {
    case "message":
      return `${event.kind.value.senderUsername}: ${event.kind.value.text}`;
    case "userJoined":
      return `+${event.kind.value.username}`;
    case "userLeft":
      return `-${event.kind.value.username}`;
    case "presence":
      return `[${event.kind.value.members.map((m) => m.username).join(",")}]`;
    default:
      return "?";
  }
}
const events = (items: readonly { event?: RoomEvent | undefined }[]) =>
  items.map((i) => describeEvent(i.event));
const messageIds = (items: readonly { event?: RoomEvent | undefined }[]) =>
  items.flatMap((i) => (i.event?.kind.case === "message" ? [Number(i.event.kind.value.id)] : []));
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

let seq = 0;
const send = (user: UserRecord, room: string, text: string, clientMsgId = `m-${++seq}`) =>
  clientFor(user).send({ room, text, clientMsgId });

/** Waits until the hub has `n` subscribers (a subscription is live once counted). */
const subscribers = (n: number) => vi.waitFor(() => expect(hub.stats().subscribers).toBe(n));

describe("ChatService.Subscribe and Send", () => {
  it("let subscribers see each other's messages in order, after a presence snapshot, with joined and left events", async () => {
    const aliceSub = collect(clientFor(alice).subscribe({ room: "lobby" }));
    await vi.waitFor(() => expect(events(aliceSub.items)).toEqual(["[alice]", "+alice"]));
    const bobAbort = new AbortController();
    const bobSub = collect(
      clientFor(bob).subscribe({ room: "lobby" }, { signal: bobAbort.signal }),
    );
    await vi.waitFor(() => expect(events(bobSub.items)).toEqual(["[alice,bob]", "+bob"]));

    const sent = await send(alice, "lobby", "hi bob");
    expect(sent.message).toMatchObject({
      id: 1n,
      room: "lobby",
      senderId: alice.id,
      senderUsername: "alice",
      text: "hi bob",
    });
    await send(bob, "lobby", "hi alice");
    await send(alice, "lobby", "how are you?");
    const conversation = ["alice: hi bob", "bob: hi alice", "alice: how are you?"];
    await vi.waitFor(() => expect(events(bobSub.items).slice(2)).toEqual(conversation));
    await vi.waitFor(() =>
      expect(events(aliceSub.items).slice(2)).toEqual(["+bob", ...conversation]),
    );

    bobAbort.abort();
    await vi.waitFor(() => expect(events(aliceSub.items).at(-1)).toBe("-bob"));
    expect(messageIds(aliceSub.items)).toEqual([1, 2, 3]);
  });

  it("count a user once in presence however many subscriptions they have", async () => {
    const watcher = collect(clientFor(carol).subscribe({ room: "lobby" }));
    await subscribers(1);
    const first = new AbortController();
    const second = new AbortController();
    const a1 = collect(clientFor(alice).subscribe({ room: "lobby" }, { signal: first.signal }));
    const a2 = collect(clientFor(alice).subscribe({ room: "lobby" }, { signal: second.signal }));
    await vi.waitFor(() => expect(events(a1.items)[0]).toBe("[alice,carol]"));
    await vi.waitFor(() => expect(events(a2.items)[0]).toBe("[alice,carol]"));
    first.abort();
    await subscribers(2);
    await sleep(20);
    expect(events(watcher.items)).toEqual(["[carol]", "+carol", "+alice"]);
    second.abort();
    await vi.waitFor(() =>
      expect(events(watcher.items)).toEqual(["[carol]", "+carol", "+alice", "-alice"]),
    );
  });

  it("resume with after_id: exactly the missed messages, no duplicate, then live ones", async () => {
    for (let i = 0; i < 5; i++) await send(alice, "lobby", `old ${i}`);
    const sub = collect(clientFor(bob).subscribe({ room: "lobby", afterId: 2n }));
    await vi.waitFor(() => expect(messageIds(sub.items)).toEqual([3, 4, 5]));
    await send(alice, "lobby", "new");
    await vi.waitFor(() => expect(messageIds(sub.items)).toEqual([3, 4, 5, 6]));
    expect(events(sub.items)[0]).toBe("[bob]");
  });

  it("with after_id 0 (unset), replay the whole room first", async () => {
    await send(alice, "lobby", "before");
    const sub = collect(clientFor(bob).subscribe({ room: "lobby" }));
    await vi.waitFor(() => expect(messageIds(sub.items)).toEqual([1]));
    await send(alice, "lobby", "after");
    await vi.waitFor(() => expect(messageIds(sub.items)).toEqual([1, 2]));
  });

  it("store a retried Send (same client_msg_id) once and answer with the same message", async () => {
    const first = await send(alice, "lobby", "once", "retry-me");
    const again = await send(alice, "lobby", "once", "retry-me");
    expect(again.message).toEqual(first.message);
    expect(await store.lastMessageId("lobby")).toBe(1);
    // The key is per sender: bob's message with the same client id is another message.
    const bobs = await send(bob, "lobby", "mine", "retry-me");
    expect(bobs.message?.id).toBe(2n);
  });

  it("refuse a text over 2000 characters, or blank, with a BadRequest on text", async () => {
    for (const text of ["x".repeat(2001), "   \n ", ""]) {
      const err = await rejection(send(alice, "lobby", text));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => v.field)).toEqual([
        "text",
      ]);
    }
    // Characters, not UTF-16 units: 2000 emoji fit.
    const emoji = await send(alice, "lobby", "😀".repeat(2000));
    expect(emoji.message?.text).toHaveLength(4000);
  });

  it("refuse a bad room name in every call with a BadRequest on room", async () => {
    const client = clientFor(alice);
    for (const room of ["", "Lobby", "-lobby", "a b", "x".repeat(65)]) {
      const errors = [
        await rejection(client.send({ room, text: "hi", clientMsgId: "c" })),
        await rejection(client.history({ room })),
        await rejection(
          (async () => {
            for await (const _ of client.subscribe({ room }));
          })(),
        ),
      ];
      for (const err of errors) {
        expect(err.code).toBe(Code.InvalidArgument);
        expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("room");
      }
    }
  });

  it("rate-limit Send per user with ResourceExhausted, QuotaFailure and RetryInfo", async () => {
    await setup({ chatLimit: { points: 2, durationSeconds: 60 } });
    await send(alice, "lobby", "1");
    await send(alice, "lobby", "2");
    const err = await rejection(send(alice, "lobby", "3"));
    expect(err.code).toBe(Code.ResourceExhausted);
    const retry = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
    expect(retry && durationMs(retry)).toBeGreaterThan(0);
    expect(err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).toBe(
      `chat:user:${alice.id}`,
    );
    // Another user has their own budget.
    await send(bob, "lobby", "fine");
  });

  it("refuse callers without an access token", async () => {
    const err = await rejection(clientFor().send({ room: "lobby", text: "hi", clientMsgId: "c" }));
    expect(err.code).toBe(Code.Unauthenticated);
    expect(err.findDetails(ErrorInfoSchema)[0]?.reason).toBe("TOKEN_MISSING");
  });

  it("cut off a subscriber that never reads with SUBSCRIBER_TOO_SLOW, free its queue, and keep the others current", async () => {
    await setup({ subscriberBuffer: 8 });
    const fast = collect(clientFor(bob).subscribe({ room: "lobby" }));
    const slow = clientFor(carol).subscribe({ room: "lobby" })[Symbol.asyncIterator]();
    await slow.next(); // the presence snapshot, then it stops reading
    await subscribers(2);
    for (let i = 1; i <= 60; i++) {
      await send(alice, "lobby", `m${i}`);
      // Every message reaches the reading subscriber promptly.
      await vi.waitFor(() => expect(messageIds(fast.items).at(-1)).toBe(i), {
        timeout: 1000,
        interval: 2,
      });
    }
    expect(hub.stats()).toMatchObject({ subscribers: 1, queued: 0 });
    // What was already on its way still arrives, then the error, whose
    // last_id is exactly the last message received: resuming from it loses
    // nothing.
    const received: { event?: RoomEvent | undefined }[] = [];
    let err: ConnectError | undefined;
    try {
      for (;;) {
        const next = await slow.next();
        if (next.done) break;
        received.push(next.value);
      }
    } catch (e) {
      err = ConnectError.from(e);
    }
    expect(err?.code).toBe(Code.ResourceExhausted);
    const info = err?.findDetails(ErrorInfoSchema)[0];
    expect(info?.reason).toBe("SUBSCRIBER_TOO_SLOW");
    expect(info?.metadata.last_id).toBe(String(messageIds(received).at(-1) ?? 0));
    expect(messageIds(received).length).toBeLessThan(60);
    const resumed = collect(
      clientFor(carol).subscribe({ room: "lobby", afterId: BigInt(info!.metadata.last_id!) }),
    );
    await vi.waitFor(() =>
      expect([...messageIds(received), ...messageIds(resumed.items)]).toEqual(range(1, 60)),
    );
  });
});

describe("ChatService.History", () => {
  it("pages backwards through a room, oldest first within a page, with has_more", async () => {
    for (let i = 1; i <= 7; i++) await send(alice, "lobby", `m${i}`);
    const client = clientFor(bob);
    const ids = (r: { messages: { id: bigint }[] }) => r.messages.map((m) => Number(m.id));
    const newest = await client.history({ room: "lobby", pageSize: 3 });
    expect([ids(newest), newest.hasMore]).toEqual([[5, 6, 7], true]);
    const older = await client.history({ room: "lobby", beforeId: 5n, pageSize: 3 });
    expect([ids(older), older.hasMore]).toEqual([[2, 3, 4], true]);
    const oldest = await client.history({ room: "lobby", beforeId: 2n, pageSize: 3 });
    expect([ids(oldest), oldest.hasMore]).toEqual([[1], false]);
    const all = await client.history({ room: "lobby" });
    expect([ids(all), all.hasMore]).toEqual([range(1, 7), false]);
    expect(all.messages[0]).toMatchObject({ text: "m1", senderUsername: "alice" });
    const empty = await client.history({ room: "nobody-here" });
    expect([ids(empty), empty.hasMore]).toEqual([[], false]);
  });

  it("refuse a page size over 200 with a BadRequest on page_size", async () => {
    const err = await rejection(clientFor(alice).history({ room: "lobby", pageSize: 201 }));
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("page_size");
  });
});

/** A bidi Chat call driven by the test: `send` frames, read `responses`. */
function openChat(user: UserRecord, signal?: AbortSignal) {
  const frames = new EventQueue<ChatRequestInit>();
  async function* requests() {
    for (;;) {
      const next = await frames.next();
      if (next.done) return;
      yield next.value;
    }
  }
  const responses = clientFor(user).chat(requests(), signal ? { signal } : {});
  return {
    send: (frame: ChatRequestInit) => frames.push(frame),
    halfClose: () => frames.close(),
    responses,
  };
}

function describeFrame(res: ChatResponse): string {
  switch (res.frame.case) {
    case "event":
      return `event ${res.frame.value.room} ${describeEvent(res.frame.value)}`;
    case "ack":
      return `ack ${res.frame.value.clientMsgId} #${res.frame.value.message?.id}`;
    case "error":
      return `error ${res.frame.value.room} ${res.frame.value.clientMsgId} ${Code[res.frame.value.code]}`;
    default:
      return "?";
  }
}

describe("ChatService.Chat", () => {
  it("joins, sends and receives its own ack and the message event, which a Subscribe client sees too", async () => {
    const watcher = collect(clientFor(bob).subscribe({ room: "lobby" }));
    await subscribers(1);
    const chat = openChat(alice);
    const out = collect(chat.responses);
    chat.send({ frame: { case: "join", value: { room: "lobby" } } });
    await vi.waitFor(() =>
      expect(out.items.map(describeFrame)).toEqual([
        "event lobby [alice,bob]",
        "event lobby +alice",
      ]),
    );
    chat.send({
      frame: { case: "message", value: { room: "lobby", clientMsgId: "a1", text: "hello" } },
    });
    await vi.waitFor(() =>
      expect(out.items.map(describeFrame).slice(2).sort()).toEqual([
        "ack a1 #1",
        "event lobby alice: hello",
      ]),
    );
    const ack = out.items.find((r) => r.frame.case === "ack");
    expect(ack?.frame.value).toMatchObject({
      clientMsgId: "a1",
      message: { id: 1n, senderId: alice.id, text: "hello" },
    });
    await vi.waitFor(() => expect(events(watcher.items).at(-1)).toBe("alice: hello"));

    // Messages sent with Send reach the Chat stream as events.
    await send(bob, "lobby", "hi alice");
    await vi.waitFor(() =>
      expect(out.items.map(describeFrame).at(-1)).toBe("event lobby bob: hi alice"),
    );

    // Half-close: the stream ends after what is pending, and alice leaves.
    chat.halfClose();
    await out.finished;
    expect(out.error).toBeUndefined();
    await vi.waitFor(() => expect(events(watcher.items).at(-1)).toBe("-alice"));
  });

  it("answers bad frames with a FrameError and goes on", async () => {
    const chat = openChat(alice);
    const out = collect(chat.responses);
    chat.send({ frame: { case: "join", value: { room: "Not OK" } } });
    chat.send({ frame: { case: "join", value: { room: "lobby" } } });
    chat.send({ frame: { case: "join", value: { room: "lobby" } } });
    chat.send({
      frame: { case: "message", value: { room: "lobby", clientMsgId: "blank", text: "  " } },
    });
    chat.send({
      frame: { case: "message", value: { room: "elsewhere", clientMsgId: "nj", text: "hi" } },
    });
    chat.send({ frame: { case: undefined } });
    chat.send({ frame: { case: "leave", value: { room: "elsewhere" } } });
    chat.send({
      frame: { case: "message", value: { room: "lobby", clientMsgId: "ok", text: "fine" } },
    });
    chat.halfClose();
    await out.finished;
    expect(out.error).toBeUndefined();
    const frames = out.items.map(describeFrame).filter((f) => !f.startsWith("event"));
    expect(frames).toEqual([
      "error Not OK  InvalidArgument",
      "error lobby  AlreadyExists",
      "error lobby blank InvalidArgument",
      "error elsewhere nj FailedPrecondition",
      "error   InvalidArgument",
      "error elsewhere  FailedPrecondition",
      "ack ok #1",
    ]);
    const blank = out.items.find(
      (r) => r.frame.case === "error" && r.frame.value.clientMsgId === "blank",
    );
    expect(blank?.frame.value).toMatchObject({ message: "text: must not be blank" });
  });

  it("answers a message over the rate limit with a RESOURCE_EXHAUSTED FrameError carrying retry_after_ms", async () => {
    await setup({ chatLimit: { points: 1, durationSeconds: 60 } });
    const chat = openChat(alice);
    const out = collect(chat.responses);
    chat.send({ frame: { case: "join", value: { room: "lobby" } } });
    chat.send({
      frame: { case: "message", value: { room: "lobby", clientMsgId: "1", text: "a" } },
    });
    chat.send({
      frame: { case: "message", value: { room: "lobby", clientMsgId: "2", text: "b" } },
    });
    chat.halfClose();
    await out.finished;
    const error = out.items.find((r) => r.frame.case === "error");
    expect(error?.frame.case === "error" && error.frame.value).toMatchObject({
      clientMsgId: "2",
      room: "lobby",
      code: Code.ResourceExhausted,
    });
    const retryAfter = error?.frame.case === "error" ? error.frame.value.retryAfterMs : 0n;
    expect(retryAfter).toBeGreaterThan(0n);
    expect(retryAfter).toBeLessThanOrEqual(60_000n);
  });

  it("replays after after_id on join, and stops a room's events on leave", async () => {
    for (let i = 0; i < 3; i++) await send(bob, "lobby", `old ${i}`);
    const chat = openChat(alice);
    const out = collect(chat.responses);
    chat.send({ frame: { case: "join", value: { room: "lobby", afterId: 1n } } });
    await vi.waitFor(() =>
      expect(out.items.map(describeFrame)).toEqual([
        "event lobby [alice]",
        "event lobby bob: old 1",
        "event lobby bob: old 2",
        "event lobby +alice",
      ]),
    );
    chat.send({ frame: { case: "leave", value: { room: "lobby" } } });
    await subscribers(0);
    await send(bob, "lobby", "unseen");
    await sleep(30);
    expect(out.items).toHaveLength(4);
    chat.halfClose();
    await out.finished;
  });

  it("leaves every joined room when the client cancels the call", async () => {
    const watcher = collect(clientFor(bob).subscribe({ room: "a" }));
    await subscribers(1);
    const abort = new AbortController();
    const chat = openChat(alice, abort.signal);
    const out = collect(chat.responses);
    chat.send({ frame: { case: "join", value: { room: "a" } } });
    chat.send({ frame: { case: "join", value: { room: "b" } } });
    await subscribers(3);
    await vi.waitFor(() => expect(events(watcher.items).at(-1)).toBe("+alice"));
    abort.abort();
    await out.finished;
    expect(ConnectError.from(out.error).code).toBe(Code.Canceled);
    await vi.waitFor(() => expect(events(watcher.items).at(-1)).toBe("-alice"));
    await subscribers(1);
  });

  it("keeps storing and acking a client's messages while it does not read, and ends it with SUBSCRIBER_TOO_SLOW once its output overflows", async () => {
    await setup({ streamBuffer: 25 });
    await send(bob, "lobby", "before");
    const chat = openChat(alice);
    const responses = chat.responses[Symbol.asyncIterator]();
    chat.send({ frame: { case: "join", value: { room: "lobby" } } });
    expect(describeFrame((await responses.next()).value)).toBe("event lobby [alice]");
    // alice stops reading; her messages are still stored (10 acks + 10
    // events + her joined event stay within the 25 frames).
    for (let i = 1; i <= 10; i++) {
      chat.send({
        frame: { case: "message", value: { room: "lobby", clientMsgId: `c${i}`, text: `${i}` } },
      });
    }
    await vi.waitFor(() => expect(store.lastMessageId("lobby")).resolves.toBe(11));
    await sleep(20);
    expect(hub.stats().subscribers).toBe(1);
    // Others keep talking until her output overflows.
    for (let i = 0; i < 10; i++) await send(bob, "lobby", `more ${i}`);
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(0));
    let err: ConnectError | undefined;
    try {
      for (;;) if ((await responses.next()).done) break;
    } catch (e) {
      err = ConnectError.from(e);
    }
    expect(err?.code).toBe(Code.ResourceExhausted);
    const info = err?.findDetails(ErrorInfoSchema)[0];
    expect(info?.reason).toBe("SUBSCRIBER_TOO_SLOW");
    // She was written no message of the room: she resumes from the start.
    expect(info?.metadata).toEqual({ last_id: "0", last_id_lobby: "0" });
  });
});

describe("chat rules", () => {
  it("count text in characters, keep line breaks and refuse other control characters", () => {
    expect(violations(rules.text, "a\nb\tc")).toEqual([]);
    expect(violations(rules.text, "👍".repeat(2000))).toEqual([]);
    expect(violations(rules.text, "👍".repeat(2001))[0]?.description).toBe(
      "must be at most 2000 characters",
    );
    expect(violations(rules.text, "bell\u0007")[0]?.description).toBe(
      "must not contain control characters",
    );
    expect(violations(rules.clientMsgId, "x".repeat(65))).toHaveLength(1);
    expect(violations(rules.room, "a".repeat(64))).toEqual([]);
    expect(violations(rules.room, "_lobby")).toHaveLength(1);
  });

  it("are registered for the unary and server-stream requests, and Chat is exempt", () => {
    const rules = requestRules(chatRequestSchemas, chatRequestExemptions);
    expect([...rules.schemas.keys()].sort()).toEqual([
      "switchboard.chat.v1.HistoryRequest",
      "switchboard.chat.v1.SendRequest",
      "switchboard.chat.v1.SubscribeRequest",
    ]);
    expect([...rules.exempt.keys()]).toEqual(["switchboard.chat.v1.ChatRequest"]);
  });
});
