import { rm } from "node:fs/promises";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/health/v1/health_pb.js";
import { ChatService } from "../gen/switchboard/chat/v1/chat_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { decodeCursor } from "../server/src/services/user-service.js";
import { openStore } from "../server/src/storage/index.js";
import type { Store } from "../server/src/storage/store.js";
import { bearer, registerAndLogin, type Session } from "./support/auth.js";
import { startTestServer, type TestServer, tempDataDir } from "./support/server.js";
import {
  REDIS_SERVER,
  type RedisServer,
  requireBinaries,
  startRedisServer,
} from "./support/throwaway.js";

/**
 * Redis fails and comes back under two Switchboard instances sharing one
 * store and their own throwaway redis-server (never the machine's): health
 * stays SERVING, history never waits for Redis, WatchUsers is live on both
 * instances before and after the restart, and presence is re-announced.
 */

const SUITE = "Redis outages";
const runnable = requireBinaries(SUITE, [REDIS_SERVER]);
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe.skipIf(!runnable)(SUITE, () => {
  let redis: RedisServer;
  let dataDir: string;
  let store: Store;
  let one: TestServer;
  let two: TestServer;
  let alice: Session;
  let bob: Session;
  const oneLogs: Array<Record<string, unknown>> = [];

  const client = <T extends typeof UserService | typeof ChatService>(
    service: T,
    server: TestServer,
    session: Session,
  ) =>
    createClient(
      service,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        interceptors: [bearer(session.accessToken)],
      }),
    );

  /** Kills Redis (every key lost) and waits until both instances noticed. */
  const killRedis = async () => {
    await redis.kill();
    await pause(300);
  };

  beforeAll(async () => {
    redis = await startRedisServer();
    dataDir = await tempDataDir();
    store = await openStore({ dataDir });
    const env = { REDIS_URL: redis.url };
    one = await startTestServer({ env, store, dataDir, logLines: oneLogs });
    two = await startTestServer({ env, store, dataDir });
    alice = await registerAndLogin(one.url, { username: "alice" });
    bob = await registerAndLogin(two.url, { username: "bob" });
  }, 60_000);

  afterAll(async () => {
    await one?.close();
    await two?.close();
    await redis?.destroy();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("serves a new subscription's history from the database at once while Redis is down, and stays SERVING", async () => {
    const room = "history";
    const chat = client(ChatService, one, alice);
    for (const text of ["one", "two", "three"]) {
      await chat.send({ room, text, clientMsgId: text });
    }
    await killRedis();
    try {
      const controller = new AbortController();
      const started = Date.now();
      const texts: string[] = [];
      let firstEventMs: number | undefined;
      let historyMs: number | undefined;
      try {
        for await (const res of chat.subscribe(
          { room, afterId: 0n },
          { signal: controller.signal },
        )) {
          firstEventMs ??= Date.now() - started;
          if (res.event?.kind.case === "message") texts.push(res.event.kind.value.text);
          if (texts.length === 3) {
            historyMs = Date.now() - started;
            controller.abort();
          }
        }
      } catch (err) {
        if (!controller.signal.aborted) throw err;
      }
      console.log(
        `Redis down: first event after ${firstEventMs} ms, history after ${historyMs} ms`,
      );
      expect(texts).toEqual(["one", "two", "three"]);
      expect(historyMs).toBeLessThan(500);
      // Redis is optional: degraded, still serving.
      expect(one.app.health.get("")).toBe(ServingStatus.SERVING);
      expect(two.app.health.get("")).toBe(ServingStatus.SERVING);
      expect(oneLogs.some((l) => l.dependency === "redis" && l.degraded === true)).toBe(true);
    } finally {
      await redis.start();
    }
  });

  it("shows a user registered on instance 2 on instance 1's WatchUsers within 1 s, before, during and after a Redis restart, in cursor order with no gap or duplicate", async () => {
    const seen: Array<{ seq: number; username: string; at: number }> = [];
    const controller = new AbortController();
    const watching = (async () => {
      for await (const res of client(UserService, one, alice).watchUsers(
        {},
        { signal: controller.signal },
      )) {
        seen.push({ seq: decodeCursor(res.cursor), username: res.user!.username, at: Date.now() });
      }
    })().catch((err: unknown) => {
      if (!controller.signal.aborted) throw ConnectError.from(err);
    });
    const users = client(UserService, two, bob);
    const delays: Record<string, number> = {};
    const registerOnTwo = async (username: string) => {
      const { user } = await users.registerUser({
        username,
        email: `${username}@example.com`,
        password: "correct horse battery",
      });
      const acked = Date.now();
      await expect
        .poll(() => seen.some((s) => s.username === username), { timeout: 3000, interval: 5 })
        .toBe(true);
      delays[username] = Math.max(0, seen.find((s) => s.username === username)!.at - acked);
      return user!;
    };

    await expect.poll(() => seen.length, { timeout: 3000 }).toBeGreaterThanOrEqual(2);
    await registerOnTwo("before");
    await killRedis();
    await registerOnTwo("during");
    await redis.start();
    // Both instances' bus connections reconnect (attempts ≤ 500 ms apart).
    await pause(1000);
    await registerOnTwo("after1");
    await registerOnTwo("after2");
    controller.abort();
    await watching;

    console.log("WatchUsers cross-instance delay (ms after RegisterUser's answer):", delays);
    for (const [name, ms] of Object.entries(delays)) {
      expect(ms, name).toBeLessThan(1000);
    }
    const seqs = seen.map((s) => s.seq);
    expect(seqs).toEqual(seqs.map((_, i) => seqs[0]! + i));
    expect(seen.map((s) => s.username).slice(-4)).toEqual(["before", "during", "after1", "after2"]);
  });

  it("re-announces presence on every instance after a Redis restart: both member lists are right within 2 s", async () => {
    const room = "presence";
    type Tracker = { members: Set<string>; snapshots: number; changedAt: number };
    const follow = (server: TestServer, session: Session, signal: AbortSignal) => {
      const tracker: Tracker = { members: new Set(), snapshots: 0, changedAt: 0 };
      const running = (async () => {
        for await (const res of client(ChatService, server, session).subscribe(
          { room },
          { signal },
        )) {
          const kind = res.event?.kind;
          if (kind?.case === "presence") {
            tracker.members = new Set(kind.value.members.map((m) => m.username));
            tracker.snapshots++;
          } else if (kind?.case === "userJoined") tracker.members.add(kind.value.username);
          else if (kind?.case === "userLeft") tracker.members.delete(kind.value.username);
          tracker.changedAt = Date.now();
        }
      })().catch(() => undefined);
      return { tracker, running };
    };
    const controller = new AbortController();
    const onOne = follow(one, alice, controller.signal);
    const onTwo = follow(two, bob, controller.signal);
    const both = (t: Tracker) => [...t.members].sort().join(",") === "alice,bob";
    await expect
      .poll(() => both(onOne.tracker) && both(onTwo.tracker), { timeout: 5000 })
      .toBe(true);

    await killRedis();
    const snapshotsBefore = [onOne.tracker.snapshots, onTwo.tracker.snapshots];
    const back = Date.now();
    await redis.start();
    // The fresh Redis has no presence keys; within 2 s both instances must
    // have re-announced theirs and both lists be whole again.
    await pause(2000);
    const figures = [onOne.tracker, onTwo.tracker].map((t) => ({
      members: [...t.members].sort().join(","),
      lastChangeAfterRestartMs: t.changedAt - back,
    }));
    console.log("presence after a Redis restart:", figures);
    expect(onOne.tracker.snapshots).toBeGreaterThan(snapshotsBefore[0]!);
    expect(onTwo.tracker.snapshots).toBeGreaterThan(snapshotsBefore[1]!);
    expect(both(onOne.tracker)).toBe(true);
    expect(both(onTwo.tracker)).toBe(true);
    controller.abort();
    await Promise.all([onOne.running, onTwo.running]);
  });
});
