import { randomBytes } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { pino } from "pino";
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { deleteKeys, requireRedis, TEST_REDIS_URL } from "../../../test/support/redis.js";
import type { Store, UserRecord } from "../storage/store.js";
import { createChatLimiter } from "./chat-limiter.js";
import { collect, openChatTestStore, sleep } from "./chat-test-support.js";
import { ChatHub, type HubEvent } from "./hub.js";
import { RedisBus } from "./redis-bus.js";
import { RedisPresence } from "./redis-presence.js";

/**
 * Two hubs with their own Redis bus and presence stand for two server
 * processes sharing one database: what one stores, the other's subscribers
 * get; a user counts once across both.
 */

const redisUp = await requireRedis("ChatHub across processes (Redis)");

describe.skipIf(!redisUp)("ChatHub across processes (Redis)", () => {
  const runId = randomBytes(4).toString("hex");
  const prefix = `sbtest:${runId}:`;
  let store: Store;
  let cleanup: () => Promise<void>;
  let alice: UserRecord;
  let bob: UserRecord;
  let closers: Array<() => Promise<void>>;

  beforeEach(async () => {
    const opened = await openChatTestStore(["alice", "bob"]);
    store = opened.store;
    cleanup = opened.cleanup;
    [alice, bob] = opened.users as [UserRecord, UserRecord];
    closers = [];
  });
  afterEach(async () => {
    for (const close of closers.reverse()) await close();
    await cleanup();
  });
  afterAll(async () => {
    const admin = new Redis(TEST_REDIS_URL);
    await deleteKeys(admin, prefix);
    admin.disconnect();
  });

  function process(): ChatHub {
    const bus = new RedisBus(TEST_REDIS_URL, { channelPrefix: `${prefix}chat:` });
    const presence = new RedisPresence(TEST_REDIS_URL, { keyPrefix: `${prefix}presence:` });
    const hub = new ChatHub({
      store,
      bus,
      presence,
      subscriberBuffer: 100,
      logger: pino({ level: "silent" }),
    });
    closers.push(async () => {
      await hub.close();
      await bus.close();
      await presence.close();
    });
    return hub;
  }

  const member = (u: UserRecord) => ({ userId: u.id, username: u.username });
  let seq = 0;
  const message = (room: string, u: UserRecord) => ({
    room,
    senderId: u.id,
    senderUsername: u.username,
    text: `text ${++seq}`,
    clientMsgId: `c${seq}`,
    createTime: new Date(),
  });
  const ids = (events: readonly HubEvent[]) =>
    events.flatMap((e) => (e.kind === "message" ? [e.message.id] : []));
  const presenceEvents = (events: readonly HubEvent[]) =>
    events.flatMap((e) =>
      e.kind === "joined" || e.kind === "left" ? [`${e.kind} ${e.member.username}`] : [],
    );

  it("delivers a message stored through one process to the other's subscribers", async () => {
    const one = process();
    const two = process();
    const sub = collect(two.subscribe("lobby"));
    await vi.waitFor(() => expect(sub.items).toHaveLength(1));
    await sleep(300); // SUBSCRIBE is active
    for (let i = 0; i < 5; i++) await one.append(message("lobby", alice));
    await vi.waitFor(() => expect(ids(sub.items)).toEqual([1, 2, 3, 4, 5]));
  });

  it("counts a user once across processes: joined on the first connection anywhere, left on the last", async () => {
    const one = process();
    const two = process();
    const watcher = collect(two.subscribe("lobby", { member: member(bob) }));
    await vi.waitFor(() => expect(watcher.items[0]).toMatchObject({ kind: "presence" }));
    await sleep(300);
    const onOne = new AbortController();
    const onTwo = new AbortController();
    const a1 = collect(one.subscribe("lobby", { member: member(alice), signal: onOne.signal }));
    await vi.waitFor(() => expect(presenceEvents(watcher.items)).toContain("joined alice"));
    const a2 = collect(two.subscribe("lobby", { member: member(alice), signal: onTwo.signal }));
    await vi.waitFor(() => expect(a2.items[0]).toMatchObject({ kind: "presence" }));
    expect(a2.items[0]).toMatchObject({ members: [member(alice), member(bob)] });
    onOne.abort(new ConnectError("gone", Code.Canceled));
    await a1.finished;
    await sleep(200);
    expect(presenceEvents(watcher.items).filter((e) => e.endsWith("alice"))).toEqual([
      "joined alice",
    ]);
    onTwo.abort(new ConnectError("gone", Code.Canceled));
    await vi.waitFor(() =>
      expect(presenceEvents(watcher.items).filter((e) => e.endsWith("alice"))).toEqual([
        "joined alice",
        "left alice",
      ]),
    );
  });

  it("shares the chat rate limit between processes", async () => {
    const redisA = new Redis(TEST_REDIS_URL);
    const redisB = new Redis(TEST_REDIS_URL);
    closers.push(async () => {
      redisA.disconnect();
      redisB.disconnect();
    });
    await Promise.all([redisA.ping(), redisB.ping()]);
    const options = { limit: { points: 2, durationSeconds: 30 }, keyPrefix: `${prefix}rl:chat` };
    const limiterA = createChatLimiter({ ...options, redis: redisA });
    const limiterB = createChatLimiter({ ...options, redis: redisB });
    await limiterA(alice.id);
    await limiterB(alice.id);
    await expect(limiterA(alice.id)).rejects.toMatchObject({ code: Code.ResourceExhausted });
    await expect(limiterB(alice.id)).rejects.toMatchObject({ code: Code.ResourceExhausted });
  });
});
