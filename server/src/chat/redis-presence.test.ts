import { randomBytes, randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  deleteKeys,
  requireRedis,
  TEST_REDIS,
  TEST_REDIS_URL,
  waitUntil,
} from "../../../test/support/redis.js";
import type { Member } from "./presence.js";
import { RedisPresence, type RedisPresenceOptions } from "./redis-presence.js";

/**
 * RedisPresence against a real Redis: two instances stand for two server
 * processes sharing one Redis. Every run uses its own key prefix, deleted at
 * the end.
 */

const redisUp = await requireRedis("RedisPresence with a real Redis");

describe.skipIf(!redisUp)("RedisPresence with a real Redis", () => {
  const prefix = `sbtest:${randomBytes(4).toString("hex")}:presence:`;
  let admin: Redis;
  const open: RedisPresence[] = [];

  function presence(options: RedisPresenceOptions = {}): RedisPresence {
    const p = new RedisPresence(TEST_REDIS_URL, { keyPrefix: prefix, ...options });
    open.push(p);
    return p;
  }

  let counter = 0;
  function user(name = "user"): Member {
    counter += 1;
    return { userId: randomUUID(), username: `${name}${String(counter).padStart(3, "0")}` };
  }
  const room = () => `room-${randomBytes(4).toString("hex")}`;

  beforeAll(async () => {
    admin = new Redis(TEST_REDIS);
    await admin.ping();
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((p) => p.close()));
  });

  afterAll(async () => {
    if (!admin) return;
    await deleteKeys(admin, prefix);
    expect(await admin.keys(`${prefix}*`)).toEqual([]);
    admin.disconnect();
  });

  it("counts a user with connections on two instances once", async () => {
    const a = presence();
    const b = presence();
    const r = room();
    const ada = user("ada");
    const bob = user("bob");

    await expect(a.join(r, ada, "c1")).resolves.toBe(true);
    await expect(b.join(r, ada, "c2")).resolves.toBe(false);
    await expect(a.join(r, ada, "c3")).resolves.toBe(false);
    await expect(b.join(r, bob, "c1")).resolves.toBe(true);

    for (const p of [a, b]) {
      await expect(p.members(r)).resolves.toEqual([ada, bob]);
    }
    await expect(a.members(room())).resolves.toEqual([]);

    await expect(a.leave(r, ada, "c1")).resolves.toBe(false);
    await expect(b.leave(r, ada, "c2")).resolves.toBe(false);
    await expect(a.members(r)).resolves.toEqual([ada, bob]);
    await expect(a.leave(r, ada, "c3")).resolves.toBe(true);
    await expect(b.members(r)).resolves.toEqual([bob]);

    // Leaving an unknown connection, or twice, is not a "last leave".
    await expect(a.leave(r, ada, "c3")).resolves.toBe(false);
    await expect(a.leave(r, bob, "nope")).resolves.toBe(false);
    await expect(b.leave(r, bob, "c1")).resolves.toBe(true);
    await expect(a.members(r)).resolves.toEqual([]);
    // An empty room leaves no keys behind.
    expect(await admin.keys(`${prefix}*${r}`)).toEqual([]);
  });

  it("keeps rooms apart and orders members by username", async () => {
    const a = presence();
    const r1 = room();
    const r2 = room();
    const zed = { userId: randomUUID(), username: "zed" };
    const amy = { userId: randomUUID(), username: "amy" };
    const mia = { userId: randomUUID(), username: "mia" };
    await a.join(r1, zed, "z");
    await a.join(r1, amy, "a");
    await a.join(r1, mia, "m");
    await expect(a.join(r2, zed, "z")).resolves.toBe(true);
    await expect(a.members(r1)).resolves.toEqual([amy, mia, zed]);
    await expect(a.members(r2)).resolves.toEqual([zed]);
    await a.leave(r1, zed, "z");
    await expect(a.members(r2)).resolves.toEqual([zed]);
  });

  it("treats a repeated join of the same connection as not first", async () => {
    const a = presence();
    const r = room();
    const ada = user("ada");
    await expect(a.join(r, ada, "c")).resolves.toBe(true);
    await expect(a.join(r, ada, "c")).resolves.toBe(false);
    await expect(a.leave(r, ada, "c")).resolves.toBe(true);
  });

  it("keeps user ids containing the separator apart", async () => {
    const a = presence();
    const r = room();
    // Unescaped, both connections would be "x|y|z".
    const one = { userId: "x|y", username: "one" };
    const two = { userId: "x", username: "two" };
    const pct = { userId: "x%7Cy", username: "pct" };
    await expect(a.join(r, one, "z")).resolves.toBe(true);
    await expect(a.join(r, two, "y|z")).resolves.toBe(true);
    await expect(a.join(r, pct, "z")).resolves.toBe(true);
    await expect(a.members(r)).resolves.toEqual([one, pct, two]);
    await expect(a.leave(r, two, "y|z")).resolves.toBe(true);
    await expect(a.members(r)).resolves.toEqual([one, pct]);
  });

  it("lets exactly one of concurrent first joins of a user from two instances report true", async () => {
    const a = presence();
    const b = presence();
    for (let round = 0; round < 10; round += 1) {
      const r = room();
      const ada = user("ada");
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).join(r, ada, `c${i}`)),
      );
      expect(results.filter(Boolean)).toHaveLength(1);
      const leaves = await Promise.all(
        Array.from({ length: 8 }, (_, i) => (i % 2 ? b : a).leave(r, ada, `c${i}`)),
      );
      expect(leaves.filter(Boolean)).toHaveLength(1);
      await expect(a.members(r)).resolves.toEqual([]);
    }
  });

  it("drops a closed instance's connections after the ttl, keeping a live one's", async () => {
    const ttlMs = 600;
    const a = presence({ ttlMs });
    const b = presence({ ttlMs });
    const r = room();
    const ada = user("ada");
    const bob = user("bob");
    const cy = user("cy");
    await a.join(r, ada, "a1");
    await a.join(r, bob, "a2");
    await b.join(r, bob, "b1");
    await b.join(r, cy, "b2");

    // "Crash" a: no leave, no more heartbeats.
    await a.close();
    await expect(b.members(r)).resolves.toEqual([ada, bob, cy]);
    const closedAt = Date.now();
    await waitUntil(
      async () => (await b.members(r)).length === 2,
      ttlMs * 4,
      "the closed instance's connections to expire",
    );
    expect(Date.now() - closedAt).toBeGreaterThanOrEqual(ttlMs / 3);
    // b's heartbeats kept its connections live well past the ttl.
    await new Promise((resolve) => setTimeout(resolve, ttlMs * 2));
    await expect(b.members(r)).resolves.toEqual([bob, cy]);

    // Ada is gone, so her next connection is a first join again; bob's
    // remaining (live) connection still counts.
    await expect(b.join(r, ada, "b3")).resolves.toBe(true);
    await expect(b.join(r, bob, "b4")).resolves.toBe(false);
    await expect(b.leave(r, bob, "b1")).resolves.toBe(false);
    await expect(b.leave(r, bob, "b4")).resolves.toBe(true);
  });

  it("expires keys of rooms nobody heartbeats any more", async () => {
    const ttlMs = 300;
    const a = presence({ ttlMs });
    const r = room();
    await a.join(r, user(), "c");
    const ttl = await admin.pttl(`${prefix}conns:${r}`);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(2 * ttlMs);
    await a.close();
    await waitUntil(
      async () => (await admin.exists(`${prefix}conns:${r}`)) === 0,
      ttlMs * 5,
      "the room's keys to expire",
    );
    expect(await admin.keys(`${prefix}*${r}`)).toEqual([]);
  });

  it("re-adds its own connections on the next heartbeat when Redis lost them", async () => {
    const ttlMs = 600;
    const a = presence({ ttlMs });
    const r = room();
    const ada = user("ada");
    await a.join(r, ada, "c");
    await deleteKeys(admin, `${prefix}conns:${r}`);
    await deleteKeys(admin, `${prefix}index:${r}`);
    await deleteKeys(admin, `${prefix}names:${r}`);
    await expect(a.members(r)).resolves.toEqual([]);
    await waitUntil(async () => (await a.members(r)).length === 1, ttlMs, "the heartbeat");
    await expect(a.members(r)).resolves.toEqual([ada]);
  });

  it("rejects with Unavailable, quickly, when Redis is unreachable", async () => {
    const dead = new RedisPresence("redis://127.0.0.1:1", {
      keyPrefix: prefix,
      commandTimeoutMs: 300,
    });
    open.push(dead);
    const started = Date.now();
    const outcome = await dead.join(room(), user(), "c").catch((e: unknown) => e);
    expect(outcome).toBeInstanceOf(ConnectError);
    expect((outcome as ConnectError).code).toBe(Code.Unavailable);
    expect(Date.now() - started).toBeLessThan(1500);
    const members = await dead.members(room()).catch((e: unknown) => e);
    expect((members as ConnectError).code).toBe(Code.Unavailable);
  });

  it("rejects calls after close with Unavailable, and closes idempotently", async () => {
    const a = presence();
    await a.members(room());
    await a.close();
    await a.close();
    const err = await a.join(room(), user(), "c").catch((e: unknown) => e);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
  });

  it("refuses a heartbeat period that is not below the ttl", () => {
    expect(() => new RedisPresence(TEST_REDIS_URL, { ttlMs: 100, heartbeatMs: 100 })).toThrow(
      RangeError,
    );
    expect(() => new RedisPresence(TEST_REDIS_URL, { ttlMs: 0 })).toThrow(RangeError);
  });
});
