import { Code, ConnectError } from "@connectrpc/connect";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import type { Store, UserRecord } from "../storage/store.js";
import type { BusEvent } from "./bus.js";
import {
  collect,
  openChatTestStore,
  overrideStore,
  ResyncableBus,
  sleep,
} from "./chat-test-support.js";
import { ChatHub, type HubEvent, type HubOptions } from "./hub.js";
import { LocalPresence } from "./presence.js";

let store: Store;
let cleanup: () => Promise<void>;
let alice: UserRecord;
let bob: UserRecord;
let bus: ResyncableBus;
let presence: LocalPresence;
const hubs: ChatHub[] = [];

beforeEach(async () => {
  const opened = await openChatTestStore(["alice", "bob"]);
  store = opened.store;
  cleanup = opened.cleanup;
  [alice, bob] = opened.users as [UserRecord, UserRecord];
  bus = new ResyncableBus();
  presence = new LocalPresence();
});
afterEach(async () => {
  for (const hub of hubs.splice(0)) await hub.close();
  await cleanup();
});

function newHub(options: Partial<HubOptions> = {}): ChatHub {
  const hub = new ChatHub({
    store,
    bus,
    presence,
    subscriberBuffer: 512,
    logger: pino({ level: "silent" }),
    ...options,
  });
  hubs.push(hub);
  return hub;
}

const member = (u: UserRecord) => ({ userId: u.id, username: u.username });
let msgSeq = 0;
const message = (room: string, u: UserRecord = alice, text = `hello ${++msgSeq}`) => ({
  room,
  senderId: u.id,
  senderUsername: u.username,
  text,
  clientMsgId: `c-${++msgSeq}`,
  createTime: new Date(),
});
const ids = (events: readonly HubEvent[]) =>
  events.flatMap((e) => (e.kind === "message" ? [e.message.id] : []));
const range = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Appends straight to the store (as another process would), without waking anyone. */
async function appendElsewhere(room: string, n: number): Promise<number> {
  let last = 0;
  for (let i = 0; i < n; i++) last = (await store.appendMessage(message(room))).message.id;
  return last;
}

describe("ChatHub subscriptions", () => {
  it("start with a presence snapshot listing the subscriber (then its own joined event), then deliver appended messages in order", async () => {
    const hub = newHub();
    const sub = collect(hub.subscribe("lobby", { member: member(alice) }));
    await vi.waitFor(() => expect(sub.items).toHaveLength(2));
    expect(sub.items).toEqual([
      { kind: "presence", room: "lobby", members: [member(alice)], afterId: 0 },
      { kind: "joined", room: "lobby", member: member(alice) },
    ]);
    for (let i = 0; i < 5; i++) await hub.append(message("lobby"));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([1, 2, 3, 4, 5]));
    const first = sub.items.find((e) => e.kind === "message");
    expect(first).toMatchObject({
      room: "lobby",
      message: { senderId: alice.id, text: expect.any(String) },
    });
  });

  it("without afterId deliver only messages stored after they started", async () => {
    await appendElsewhere("lobby", 3);
    const hub = newHub();
    const sub = collect(hub.subscribe("lobby"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(1));
    await sleep(20);
    await hub.append(message("lobby"));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([4]));
    expect(sub.items[0]).toMatchObject({ kind: "presence", afterId: 3 });
  });

  it("with afterId replay exactly the stored messages after it, then live ones, with no gap and no duplicate while messages keep arriving", async () => {
    await appendElsewhere("lobby", 30);
    const hub = newHub({ pageSize: 4 });
    const iterator = hub.subscribe("lobby", { afterId: 10 });
    const got: HubEvent[] = [];
    // Pull slowly while a writer appends concurrently, so live messages queue
    // up during the catch-up.
    const writer = (async () => {
      for (let i = 0; i < 20; i++) {
        await hub.append(message("lobby"));
        await sleep(1);
      }
    })();
    while (ids(got).at(-1) !== 50) {
      const next = await iterator.next();
      if (next.done) break;
      got.push(next.value);
      await sleep(1);
    }
    await writer;
    await iterator.return();
    expect(ids(got)).toEqual(range(11, 50));
  });

  it("with afterId 0 replay the whole room", async () => {
    await appendElsewhere("lobby", 7);
    const hub = newHub({ pageSize: 3 });
    const sub = collect(hub.subscribe("lobby", { afterId: 0 }));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual(range(1, 7)));
  });

  it("treat an afterId beyond the newest message as the newest", async () => {
    await appendElsewhere("lobby", 2);
    const hub = newHub();
    const sub = collect(hub.subscribe("lobby", { afterId: 1_000 }));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(1));
    await sleep(20);
    await hub.append(message("lobby"));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([3]));
    expect(sub.items[0]).toMatchObject({ kind: "presence", afterId: 2 });
  });

  it("wake on a bus announcement of a message another process stored", async () => {
    const hub = newHub();
    const sub = collect(hub.subscribe("lobby"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(1));
    await sleep(20);
    const last = await appendElsewhere("lobby", 3);
    await bus.publish({ kind: "message", room: "lobby", lastId: last });
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([1, 2, 3]));
  });

  it("re-read the store and get a fresh presence snapshot when the bus resyncs", async () => {
    const hub = newHub();
    const sub = collect(hub.subscribe("lobby"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(1));
    await sleep(20);
    await appendElsewhere("lobby", 2); // the announcement was "lost"
    await presence.join("lobby", member(bob), "elsewhere");
    bus.triggerResync();
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([1, 2]));
    await vi.waitFor(() =>
      expect(sub.items.filter((e) => e.kind === "presence").at(-1)).toEqual({
        kind: "presence",
        room: "lobby",
        members: [member(bob)],
      }),
    );
  });

  it("keep rooms apart", async () => {
    const hub = newHub();
    const a = collect(hub.subscribe("a"));
    const b = collect(hub.subscribe("b"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(2));
    await sleep(20);
    await hub.append(message("a"));
    await hub.append(message("b"));
    await hub.append(message("b"));
    await vi.waitFor(() => expect(ids(b.items)).toEqual([1, 2]));
    expect(a.items.flatMap((e) => (e.kind === "message" ? [e.room] : []))).toEqual(["a"]);
  });
});

describe("ChatHub fan-out", () => {
  it("serves many subscribers of a room with one store read per wake, not one per subscriber", async () => {
    const hub = newHub({ settleCheckMs: 0 });
    const subs = Array.from({ length: 200 }, () => collect(hub.subscribe("lobby")));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(200));
    await sleep(20);
    const before = hub.stats().liveReads;
    for (let i = 0; i < 5; i++) await hub.append(message("lobby"));
    for (const sub of subs) await vi.waitFor(() => expect(ids(sub.items)).toEqual(range(1, 5)));
    expect(hub.stats().liveReads - before).toBeLessThanOrEqual(5);
  });

  it("never runs two live reads of a room at once, and coalesces wakes that arrive during a read", async () => {
    let running = 0;
    let maxRunning = 0;
    let liveCalls = 0;
    const slowStore = overrideStore(store, {
      listMessagesAfter: async (room, afterId, limit, options) => {
        // Feeds read without a signal; catch-up reads carry the subscriber's.
        if (options?.signal) return store.listMessagesAfter(room, afterId, limit, options);
        liveCalls++;
        running++;
        maxRunning = Math.max(maxRunning, running);
        try {
          await sleep(15);
          return await store.listMessagesAfter(room, afterId, limit);
        } finally {
          running--;
        }
      },
    });
    const hub = newHub({ store: slowStore });
    const sub = collect(hub.subscribe("lobby"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(1));
    await sleep(20);
    await Promise.all(Array.from({ length: 20 }, () => hub.append(message("lobby"))));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual(range(1, 20)));
    expect(maxRunning).toBe(1);
    expect(liveCalls).toBeLessThan(20);
  });

  it("cuts off a subscriber that stops reading with SUBSCRIBER_TOO_SLOW and its last id, frees its queue, and never delays the others", async () => {
    const hub = newHub({ subscriberBuffer: 5 });
    const fast = collect(hub.subscribe("lobby"));
    const slow = hub.subscribe("lobby");
    expect((await slow.next()).value).toMatchObject({ kind: "presence" });
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(2));
    await sleep(20);
    await hub.append(message("lobby"));
    await hub.append(message("lobby"));
    expect((await slow.next()).value).toMatchObject({ kind: "message", message: { id: 1 } });
    expect((await slow.next()).value).toMatchObject({ kind: "message", message: { id: 2 } });
    // The slow one stops reading here.
    for (let i = 0; i < 40; i++) await hub.append(message("lobby"));
    await vi.waitFor(() => expect(ids(fast.items)).toEqual(range(1, 42)));
    expect(hub.stats()).toMatchObject({ subscribers: 1, queued: 0 });

    const err = await slow.next().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.code).toBe(Code.ResourceExhausted);
    const [info] = err!.findDetails(ErrorInfoSchema);
    expect(info?.reason).toBe("SUBSCRIBER_TOO_SLOW");
    expect(info?.metadata.last_id).toBe("2");
    // Resuming from last_id gets exactly what was missed.
    const resumed = collect(hub.subscribe("lobby", { afterId: Number(info?.metadata.last_id) }));
    await vi.waitFor(() => expect(ids(resumed.items)).toEqual(range(3, 42)));
  });

  it("cuts off a subscriber whose live events pile up during a slow catch-up", async () => {
    await appendElsewhere("lobby", 5);
    const hub = newHub({ subscriberBuffer: 3 });
    const sub = hub.subscribe("lobby", { afterId: 0 });
    await sub.next(); // presence
    expect((await sub.next()).value).toMatchObject({ message: { id: 1 } });
    for (let i = 0; i < 4; i++) await hub.append(message("lobby"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(0));
    const err = await sub.next().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    expect(err?.findDetails(ErrorInfoSchema)[0]?.metadata.last_id).toBe("1");
  });
});

describe("ChatHub presence", () => {
  it("counts a user once however many subscriptions, announcing joined on the first and left on the last", async () => {
    const hub = newHub();
    const events: BusEvent[] = [];
    const unsubscribe = bus.subscribe("lobby", (e) => events.push(e));
    const watcher = collect(hub.subscribe("lobby"));
    const a1 = hub.subscribe("lobby", { member: member(alice) });
    const a2 = hub.subscribe("lobby", { member: member(alice) });
    expect((await a1.next()).value).toMatchObject({
      kind: "presence",
      room: "lobby",
      members: [member(alice)],
    });
    expect((await a2.next()).value).toMatchObject({
      kind: "presence",
      room: "lobby",
      members: [member(alice)],
    });
    const b = hub.subscribe("lobby", { member: member(bob) });
    expect((await b.next()).value).toMatchObject({
      kind: "presence",
      room: "lobby",
      members: [member(alice), member(bob)],
    });
    await a1.return();
    await sleep(10);
    expect(await presence.members("lobby")).toEqual([member(alice), member(bob)]);
    await a2.return();
    await b.return();
    await vi.waitFor(() =>
      expect(events.filter((e) => e.kind !== "message")).toEqual([
        { kind: "joined", room: "lobby", userId: alice.id, username: "alice" },
        { kind: "joined", room: "lobby", userId: bob.id, username: "bob" },
        { kind: "left", room: "lobby", userId: alice.id, username: "alice" },
        { kind: "left", room: "lobby", userId: bob.id, username: "bob" },
      ]),
    );
    // Subscribers (an invisible watcher here) see the same, as room events.
    await vi.waitFor(() =>
      expect(watcher.items.map((e) => e.kind)).toEqual([
        "presence",
        "joined",
        "joined",
        "left",
        "left",
      ]),
    );
    expect(await presence.members("lobby")).toEqual([]);
    unsubscribe();
  });

  it("leaves when the subscription's signal aborts, even while its consumer is not reading", async () => {
    const hub = newHub();
    const controller = new AbortController();
    const sub = hub.subscribe("lobby", { member: member(alice), signal: controller.signal });
    await sub.next();
    expect(await presence.members("lobby")).toEqual([member(alice)]);
    controller.abort(new ConnectError("client went away", Code.Canceled));
    await vi.waitFor(async () => expect(await presence.members("lobby")).toEqual([]));
    await vi.waitFor(() => expect(hub.stats()).toMatchObject({ rooms: 0, subscribers: 0 }));
    await expect(sub.next()).rejects.toMatchObject({ code: Code.Canceled });
  });
});

describe("ChatHub lifecycle", () => {
  it("drops a room's feed and its bus subscription when the last subscriber leaves", async () => {
    const hub = newHub();
    const spy = vi.spyOn(bus, "subscribe");
    const a = hub.subscribe("lobby");
    const b = hub.subscribe("lobby");
    await a.next();
    await b.next();
    expect(spy).toHaveBeenCalledTimes(1);
    expect(hub.stats().rooms).toBe(1);
    await a.return();
    expect(hub.stats().rooms).toBe(1);
    await b.return();
    await vi.waitFor(() => expect(hub.stats()).toMatchObject({ rooms: 0, subscribers: 0 }));
  });

  it("reads the store again shortly after a feed starts, catching a message announced before the bus listened", async () => {
    const deafBus = new ResyncableBus();
    // A bus that drops every announcement, as a remote bus does until its SUBSCRIBE is active.
    deafBus.publish = async () => undefined;
    const hub = newHub({ bus: deafBus, settleCheckMs: 50 });
    const sub = collect(hub.subscribe("lobby"));
    await vi.waitFor(() => expect(sub.items).toHaveLength(1));
    await appendElsewhere("lobby", 1);
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([1]));
  });

  it("retries a failed live read and then delivers", async () => {
    let failures = 1;
    const flaky = overrideStore(store, {
      listMessagesAfter: async (room, afterId, limit, options) => {
        if (!options?.signal && failures > 0) {
          failures--;
          throw new ConnectError("database unavailable", Code.Unavailable);
        }
        return store.listMessagesAfter(room, afterId, limit, options);
      },
    });
    const hub = newHub({ store: flaky });
    const sub = collect(hub.subscribe("lobby"));
    await vi.waitFor(() => expect(hub.stats().subscribers).toBe(1));
    await sleep(20);
    await hub.append(message("lobby"));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([1]));
    expect(failures).toBe(0);
  });

  it("ends every subscriber with Unavailable on close, leaving presence", async () => {
    const hub = newHub();
    const a = collect(hub.subscribe("a", { member: member(alice) }));
    const b = collect(hub.subscribe("b", { member: member(bob) }));
    // Each: the presence snapshot and its own joined event.
    await vi.waitFor(() => expect(a.items.length + b.items.length).toBe(4));
    await hub.close();
    await Promise.all([a.finished, b.finished]);
    expect(ConnectError.from(a.error).code).toBe(Code.Unavailable);
    expect(ConnectError.from(b.error).code).toBe(Code.Unavailable);
    expect(await presence.members("a")).toEqual([]);
    expect(hub.stats()).toMatchObject({ rooms: 0, subscribers: 0 });
    await expect(hub.subscribe("a").next()).rejects.toMatchObject({ code: Code.Unavailable });
  });

  it("returns the stored message for a repeated append and stores it once", async () => {
    const hub = newHub();
    const m = message("lobby");
    const first = await hub.append(m);
    const again = await hub.append({ ...m, text: "changed" });
    expect(first.created).toBe(true);
    expect(again).toEqual({ message: first.message, created: false });
    expect(await store.lastMessageId("lobby")).toBe(1);
  });
});
