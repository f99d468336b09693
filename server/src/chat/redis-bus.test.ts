import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  deleteKeys,
  requireRedis,
  TEST_REDIS,
  TEST_REDIS_URL,
  waitUntil,
} from "../../../test/support/redis.js";
import type { BusEvent } from "./bus.js";
import { parseEvent, RedisBus, type RedisBusLogger } from "./redis-bus.js";

/**
 * RedisBus against a real Redis: two buses stand for two server instances.
 * Every run uses its own channel prefix and connection names.
 */

describe("parseEvent", () => {
  it("accepts the three event kinds and drops unknown fields", () => {
    expect(parseEvent('{"kind":"message","room":"r","lastId":7,"x":1}', "r")).toEqual({
      kind: "message",
      room: "r",
      lastId: 7,
    });
    expect(parseEvent('{"kind":"left","room":"r","userId":"u","username":"ada"}', "r")).toEqual({
      kind: "left",
      room: "r",
      userId: "u",
      username: "ada",
    });
  });

  it.each([
    ["not JSON", "{"],
    ["null", "null"],
    ["a string", '"message"'],
    ["another room", '{"kind":"message","room":"other","lastId":1}'],
    ["an unknown kind", '{"kind":"typing","room":"r"}'],
    ["a fractional id", '{"kind":"message","room":"r","lastId":1.5}'],
    ["a negative id", '{"kind":"message","room":"r","lastId":-1}'],
    ["an id as a string", '{"kind":"message","room":"r","lastId":"1"}'],
    ["a presence event without user", '{"kind":"joined","room":"r","username":"ada"}'],
  ])("rejects %s", (_, payload) => {
    expect(parseEvent(payload, "r")).toBeUndefined();
  });
});

const redisUp = await requireRedis("RedisBus with a real Redis");

describe.skipIf(!redisUp)("RedisBus with a real Redis", () => {
  const runId = randomBytes(4).toString("hex");
  const prefix = `sbtest:${runId}:chat:`;
  let admin: Redis;
  const buses: RedisBus[] = [];
  const warnings: { obj: object; msg: string }[] = [];
  const logger: RedisBusLogger = { warn: (obj, msg) => warnings.push({ obj, msg }) };

  function bus(name: string, redis: string | object = TEST_REDIS_URL): RedisBus {
    const b = new RedisBus(redis, {
      channelPrefix: prefix,
      logger,
      connectionName: `sbtest-${runId}-${name}`,
    });
    buses.push(b);
    return b;
  }

  /** Waits until `count` connections listen to `room`'s channel. */
  async function subscribers(room: string, count: number): Promise<void> {
    await waitUntil(
      async () => {
        const [, n] = (await admin.pubsub("NUMSUB", `${prefix}${room}`)) as [string, number];
        return Number(n) === count;
      },
      5000,
      `${count} subscribers of ${room}`,
    );
  }

  beforeAll(async () => {
    admin = new Redis(TEST_REDIS);
    await admin.ping();
  });

  afterEach(async () => {
    await Promise.all(buses.splice(0).map((b) => b.close()));
  });

  afterAll(async () => {
    if (!admin) return;
    // Pub/sub leaves no keys; this is for anything a failed run left behind.
    await deleteKeys(admin, `sbtest:${runId}:`);
    admin.disconnect();
  });

  it("delivers an event published by one instance to the other's subscribers of that room only", async () => {
    const a = bus("a");
    const b = bus("b");
    const red: BusEvent[] = [];
    const blue: BusEvent[] = [];
    const own: BusEvent[] = [];
    b.subscribe("red", (e) => red.push(e));
    b.subscribe("blue", (e) => blue.push(e));
    a.subscribe("red", (e) => own.push(e));
    await subscribers("red", 2);
    await subscribers("blue", 1);

    const event: BusEvent = { kind: "message", room: "red", lastId: 42 };
    await a.publish(event);
    const joined: BusEvent = { kind: "joined", room: "red", userId: "u1", username: "ada" };
    await a.publish(joined);
    await waitUntil(() => red.length === 2 && own.length === 2, 5000, "delivery");
    expect(red).toEqual([event, joined]);
    // The publishing instance's own subscribers hear it too.
    expect(own).toEqual([event, joined]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(blue).toEqual([]);
  });

  it("subscribes on the first listener of a room and unsubscribes on the last", async () => {
    const a = bus("a");
    const b = bus("b");
    const first: BusEvent[] = [];
    const second: BusEvent[] = [];
    const stopFirst = b.subscribe("room", (e) => first.push(e));
    const stopSecond = b.subscribe("room", (e) => second.push(e));
    await subscribers("room", 1);

    await a.publish({ kind: "message", room: "room", lastId: 1 });
    await waitUntil(() => first.length === 1 && second.length === 1, 5000, "both listeners");

    stopFirst();
    stopFirst(); // idempotent
    await a.publish({ kind: "message", room: "room", lastId: 2 });
    await waitUntil(() => second.length === 2, 5000, "the remaining listener");
    expect(first).toHaveLength(1);
    await subscribers("room", 1);

    stopSecond();
    await subscribers("room", 0);
    await a.publish({ kind: "message", room: "room", lastId: 3 });
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(first.map((e) => e.kind === "message" && e.lastId)).toEqual([1]);
    expect(second.map((e) => e.kind === "message" && e.lastId)).toEqual([1, 2]);

    // A room can be listened to again afterwards.
    const third: BusEvent[] = [];
    b.subscribe("room", (e) => third.push(e));
    await subscribers("room", 1);
    await a.publish({ kind: "message", room: "room", lastId: 4 });
    await waitUntil(() => third.length === 1, 5000, "a re-subscribed listener");
  });

  it("ignores malformed payloads, logging a warning, and keeps delivering", async () => {
    const b = bus("b");
    const got: BusEvent[] = [];
    b.subscribe("room", (e) => got.push(e));
    await subscribers("room", 1);
    warnings.length = 0;

    await admin.publish(`${prefix}room`, "not json");
    await admin.publish(`${prefix}room`, JSON.stringify({ kind: "message", room: "x", lastId: 1 }));
    await admin.publish(
      `${prefix}room`,
      JSON.stringify({ kind: "message", room: "room", lastId: 9 }),
    );
    await waitUntil(() => got.length === 1, 5000, "the valid event");
    expect(got).toEqual([{ kind: "message", room: "room", lastId: 9 }]);
    expect(warnings.filter((w) => w.msg.includes("malformed"))).toHaveLength(2);
  });

  it("keeps delivering to other listeners when one throws", async () => {
    const b = bus("b");
    const got: BusEvent[] = [];
    b.subscribe("room", () => {
      throw new Error("listener bug");
    });
    b.subscribe("room", (e) => got.push(e));
    await subscribers("room", 1);
    await b.publish({ kind: "message", room: "room", lastId: 1 });
    await waitUntil(() => got.length === 1, 5000, "the healthy listener");
  });

  it("resyncs after the subscriber connection is killed and delivers again once back", async () => {
    const a = bus("a");
    const b = bus("b");
    const got: BusEvent[] = [];
    let resyncs = 0;
    b.onResync(() => {
      resyncs += 1;
    });
    let removedResyncs = 0;
    const stopRemoved = b.onResync(() => {
      removedResyncs += 1;
    });
    stopRemoved();
    b.subscribe("room", (e) => got.push(e));
    await subscribers("room", 1);
    await a.publish({ kind: "message", room: "room", lastId: 1 });
    await waitUntil(() => got.length === 1, 5000, "the first event");
    // The very first connect is not a resync.
    expect(resyncs).toBe(0);

    const killed = await killClient(`sbtest-${runId}-b:sub`);
    expect(killed).toBe(1);
    await waitUntil(() => resyncs === 1, 10_000, "a resync");
    // Resync comes after the channel is subscribed again.
    await subscribers("room", 1);
    await a.publish({ kind: "message", room: "room", lastId: 2 });
    await waitUntil(() => got.length === 2, 5000, "delivery after the reconnect");
    expect(got.map((e) => e.kind === "message" && e.lastId)).toEqual([1, 2]);
    expect(removedResyncs).toBe(0);

    // And again: every loss is followed by one resync.
    await killClient(`sbtest-${runId}-b:sub`);
    await waitUntil(() => resyncs === 2, 10_000, "a second resync");
  });

  it("re-publishes the newest failed event per room once the publisher is back", async () => {
    const b = bus("b");
    const got: BusEvent[] = [];
    b.subscribe("room", (e) => got.push(e));
    await subscribers("room", 1);

    // Right after construction the publisher is still connecting: publish
    // resolves at once and the event goes out when it is ready.
    const c = bus("c");
    await c.publish({ kind: "message", room: "room", lastId: 5 });
    await c.publish({ kind: "message", room: "room", lastId: 6 });
    await c.publish({ kind: "message", room: "room", lastId: 4 });
    await waitUntil(() => got.length >= 1, 5000, "the pending event");
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(got).toEqual([{ kind: "message", room: "room", lastId: 6 }]);
  });

  it("resolves publish quickly without throwing when Redis is unreachable", async () => {
    const dead = bus("dead", "redis://127.0.0.1:1");
    warnings.length = 0;
    const started = Date.now();
    await expect(dead.publish({ kind: "message", room: "room", lastId: 1 })).resolves.toBe(
      undefined,
    );
    // Give it time to fail connecting, then publish again while disconnected.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const again = Date.now();
    await expect(
      dead.publish({ kind: "joined", room: "room", userId: "u", username: "ada" }),
    ).resolves.toBe(undefined);
    expect(Date.now() - again).toBeLessThan(100);
    expect(Date.now() - started).toBeLessThan(1000);
    // Subscribing does not throw either; close does not hang.
    dead.subscribe("room", () => undefined);
    const closing = Date.now();
    await dead.close();
    expect(Date.now() - closing).toBeLessThan(1500);
  });

  it("closes idempotently and ignores calls afterwards", async () => {
    const a = bus("a");
    await waitUntil(async () =>
      ((await admin.client("LIST")) as string).includes(`sbtest-${runId}-a:pub`),
    );
    await a.close();
    await a.close();
    await expect(a.publish({ kind: "message", room: "room", lastId: 1 })).resolves.toBe(undefined);
    const stop = a.subscribe("room", () => undefined);
    stop();
    const list = (await admin.client("LIST")) as string;
    expect(list).not.toContain(`sbtest-${runId}-a:`);
  });

  /** Kills every connection named `name`; returns how many. */
  async function killClient(name: string): Promise<number> {
    const list = (await admin.client("LIST")) as string;
    const ids = list
      .split("\n")
      .filter((line) => line.split(" ").includes(`name=${name}`))
      .map((line) => /(?:^| )id=(\d+)/.exec(line)?.[1])
      .filter((id): id is string => id !== undefined);
    let killed = 0;
    for (const id of ids) {
      killed += Number(await admin.client("KILL", "ID", id));
    }
    return killed;
  }
});
