import { randomBytes } from "node:crypto";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Redis } from "ioredis";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ChatService } from "../gen/switchboard/chat/v1/chat_pb.js";
import { bearer, registerAndLogin } from "./support/auth.js";
import { type SpawnedServer, spawnServer } from "./support/server.js";

/**
 * Two Switchboard processes sharing PostgreSQL and Redis, as behind a load
 * balancer. Needs both services on 127.0.0.1; without them the suite is
 * skipped loudly, except under CI=true where it must run.
 */
const PG_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

async function reachable(): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query("select 1");
  } catch (err) {
    return `PostgreSQL at ${PG_URL}: ${String(err)}`;
  } finally {
    await client.end().catch(() => undefined);
  }
  const redis = new Redis(REDIS_URL, {
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    connectTimeout: 2000,
  });
  try {
    await redis.connect();
    await redis.ping();
  } catch (err) {
    return `Redis at ${REDIS_URL}: ${String(err)}`;
  } finally {
    redis.disconnect();
  }
  return undefined;
}

const missing = await reachable();
if (missing && process.env.CI !== "true") {
  console.warn(`\n!!! SKIPPING the multi-instance tests: ${missing}\n`);
}

describe.skipIf(missing !== undefined && process.env.CI !== "true")(
  "two instances on PostgreSQL + Redis",
  () => {
    const schema = `sb_mi_${randomBytes(4).toString("hex")}`;
    const key = randomBytes(32).toString("base64url");
    const room = `mi-${randomBytes(3).toString("hex")}`;
    let a: SpawnedServer;
    let b: SpawnedServer;

    beforeAll(async () => {
      if (missing) throw new Error(`CI=true but ${missing}`);
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`create schema ${schema}`);
      await admin.end();
      const url = new URL(PG_URL);
      url.searchParams.set("options", `-c search_path=${schema}`);
      // Shared key: a token from one instance is good on the other.
      const env = { DATABASE_URL: url.toString(), REDIS_URL, AUTH_SIGNING_KEY: key };
      // Migrations run at start-up; start one first so they do not race.
      a = await spawnServer(env);
      b = await spawnServer(env);
    }, 60_000);

    afterAll(async () => {
      for (const s of [a, b]) {
        if (s && s.child.exitCode === null) {
          s.child.kill("SIGTERM");
          await s.exited;
        }
      }
      const admin = new pg.Client({ connectionString: PG_URL });
      await admin.connect();
      await admin.query(`drop schema if exists ${schema} cascade`);
      await admin.end();
    });

    it("delivers a message sent through A to a subscriber on B, and loses nothing when B's Redis connections are killed", async () => {
      const alice = await registerAndLogin(a.url, { username: "alice" });
      const bob = await registerAndLogin(b.url, { username: "bob" });

      const onB = createClient(
        ChatService,
        createConnectTransport({
          baseUrl: b.url,
          httpVersion: "1.1",
          interceptors: [bearer(bob.accessToken)],
        }),
      );
      const viaA = createClient(
        ChatService,
        createGrpcTransport({ baseUrl: a.url, interceptors: [bearer(alice.accessToken)] }),
      );
      const received: Array<{ id: bigint; text: string }> = [];
      const controller = new AbortController();
      const subscribing = (async () => {
        for await (const res of onB.subscribe({ room }, { signal: controller.signal })) {
          if (res.event?.kind.case === "message") {
            received.push({ id: res.event.kind.value.id, text: res.event.kind.value.text });
          }
        }
      })().catch(() => undefined);
      // Presence proves the subscription is live before anything is sent.
      await new Promise((resolve) => setTimeout(resolve, 300));

      await viaA.send({ room, text: "before", clientMsgId: "m-before" });
      await expect.poll(() => received.map((m) => m.text), { timeout: 5000 }).toEqual(["before"]);

      // Cut B off from Redis: kill every connection B opened (named by its pid).
      const redis = new Redis(REDIS_URL);
      const list = (await redis.client("LIST")) as string;
      const bClients = list
        .split("\n")
        .filter((line) => line.includes(`name=switchboard-${b.child.pid}:`))
        .map((line) => /(?:^|\s)id=(\d+)/.exec(line)?.[1])
        .filter((id): id is string => id !== undefined);
      expect(bClients.length).toBeGreaterThanOrEqual(2);
      for (const id of bClients) await redis.client("KILL", "ID", id);
      // These are published while B's subscriber connection is down or
      // reconnecting; B must still deliver them (resync from the store).
      for (const text of ["during-1", "during-2", "during-3"]) {
        await viaA.send({ room, text, clientMsgId: `m-${text}` });
      }
      await expect
        .poll(
          async () => {
            const now = ((await redis.client("LIST")) as string)
              .split("\n")
              .filter((line) => line.includes(`name=switchboard-${b.child.pid}:bus:sub`));
            return now.length;
          },
          { timeout: 10_000 },
        )
        .toBe(1);
      await viaA.send({ room, text: "after", clientMsgId: "m-after" });
      await expect
        .poll(() => received.map((m) => m.text), { timeout: 10_000 })
        .toEqual(["before", "during-1", "during-2", "during-3", "after"]);
      expect(received.map((m) => Number(m.id))).toEqual([1, 2, 3, 4, 5]);
      controller.abort();
      await subscribing;

      // A subscriber that resumes from the first message on B gets the rest once.
      const resumed: string[] = [];
      const again = new AbortController();
      const resuming = (async () => {
        for await (const res of onB.subscribe({ room, afterId: 1n }, { signal: again.signal })) {
          if (res.event?.kind.case === "message") resumed.push(res.event.kind.value.text);
        }
      })().catch(() => undefined);
      await expect.poll(() => resumed.length, { timeout: 5000 }).toBe(4);
      again.abort();
      await resuming;
      expect(resumed).toEqual(["during-1", "during-2", "during-3", "after"]);
      redis.disconnect();
    }, 60_000);
  },
);
