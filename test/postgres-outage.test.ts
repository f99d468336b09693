import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/health/v1/health_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { bearer, registerAndLogin } from "./support/auth.js";
import { type SpawnedServer, spawnServer } from "./support/server.js";
import {
  PG_BIN,
  type PgCluster,
  pgQuery,
  requireBinaries,
  startPgCluster,
} from "./support/throwaway.js";

/**
 * PostgreSQL fails and comes back under two Switchboard processes (its own
 * throwaway cluster, never the machine's): no process dies, calls fail fast
 * with Unavailable, health says NOT_SERVING while the store is away and
 * SERVING once it is back, and no acknowledged write is lost.
 */

const SUITE = "PostgreSQL outages";
const runnable = requireBinaries(SUITE, [join(PG_BIN, "initdb"), join(PG_BIN, "pg_ctl")]);

const CYCLES = 10;
/** storage/kysely-store.ts's USER_INSERT_LOCK_KEY (0x5342_5553_4552). */
const USER_INSERT_LOCK_KEY = 91_544_364_467_538;
const OUTAGE_MS = 700;

const median = (values: number[]) => {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN;
};
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Nothing a process prints when an 'error' event goes unhandled or it crashes. */
function expectNoCrash(server: SpawnedServer): void {
  expect(server.child.exitCode).toBeNull();
  expect(server.stderr()).not.toMatch(/Unhandled|uncaught|ECONNRESET|Connection terminated/i);
}

describe.skipIf(!runnable)(SUITE, () => {
  let cluster: PgCluster;
  let a: SpawnedServer;
  let b: SpawnedServer;
  const key = randomBytes(32).toString("base64url");

  beforeAll(async () => {
    cluster = await startPgCluster();
    const env = { DATABASE_URL: cluster.url, AUTH_SIGNING_KEY: key };
    // One after the other: migrations run at start-up.
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
    await cluster?.destroy();
  });

  it("fails a call whose connection is terminated mid-transaction with Unavailable and RetryInfo, and keeps serving", async () => {
    const alice = await registerAndLogin(a.url);
    const users = createClient(
      UserService,
      createConnectTransport({
        baseUrl: a.url,
        httpVersion: "1.1",
        interceptors: [bearer(alice.accessToken)],
      }),
    );
    // Holding the advisory lock that serialises user inserts keeps the next
    // RegisterUser's transaction in flight on a checked-out pool connection,
    // whose backend is then terminated under it. (Kysely then sends ROLLBACK
    // on it and the socket's end arrives while the client is still checked
    // out: the 'error' that used to crash the process.)
    const { default: pg } = await import("pg");
    const locker = new pg.Client({ connectionString: cluster.url });
    await locker.connect();
    await locker.query(`select pg_advisory_lock(${USER_INSERT_LOCK_KEY})`);
    const call = users
      .registerUser({
        username: "blocked",
        email: "blocked@example.com",
        password: "correct horse battery",
      })
      .then(
        () => undefined,
        (err: unknown) => ConnectError.from(err),
      );
    let pid: number | undefined;
    for (let i = 0; i < 250 && pid === undefined; i++) {
      const rows = await pgQuery<{ pid: number }>(
        cluster.url,
        "select pid from pg_stat_activity where application_name = 'switchboard' and wait_event_type = 'Lock'",
      );
      pid = rows[0]?.pid;
      if (pid === undefined) await pause(20);
    }
    expect(pid, "the insert waits on the lock").toBeDefined();
    await pgQuery(cluster.url, "select pg_terminate_backend($1)", [pid]);
    const error = await call;
    await locker.end();

    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toBe("database is unavailable");
    expect(error?.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds).toBe(1n);
    // Same process, next calls: served (the pool replaced the connection).
    await pause(200);
    expectNoCrash(a);
    const again = await users.getUser({ id: alice.userId });
    expect(again.user?.id).toBe(alice.userId);
    const retried = await users.registerUser({
      username: "blocked",
      email: "blocked@example.com",
      password: "correct horse battery",
    });
    expect(retried.user?.username).toBe("blocked");
  });

  it(`survives ${CYCLES} stop/start cycles under load on two instances: fast failures, quick recovery, truthful health, no lost write`, async () => {
    const servers = [a, b];
    const session = await registerAndLogin(a.url);
    type Read = { start: number; end: number; ok: boolean; code?: Code };
    const reads: Read[][] = servers.map(() => []);
    const acked: string[] = [];
    const checks: Array<Array<{ t: number; status: ServingStatus | "error" }>> = servers.map(
      () => [],
    );
    const watched: Array<Array<{ t: number; status: ServingStatus }>> = servers.map(() => []);
    let running = true;
    const abort = new AbortController();

    const loops: Promise<void>[] = [];
    servers.forEach((server, i) => {
      const transport = createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        interceptors: [bearer(session.accessToken)],
      });
      const users = createClient(UserService, transport);
      const health = createClient(Health, transport);
      // Two readers per instance.
      for (let r = 0; r < 2; r++) {
        loops.push(
          (async () => {
            while (running) {
              const start = Date.now();
              try {
                await users.getUser({ id: session.userId }, { timeoutMs: 3000 });
                reads[i]!.push({ start, end: Date.now(), ok: true });
              } catch (err) {
                reads[i]!.push({
                  start,
                  end: Date.now(),
                  ok: false,
                  code: ConnectError.from(err).code,
                });
              }
              await pause(10);
            }
          })(),
        );
      }
      // One writer per instance: every acknowledged id must be stored.
      loops.push(
        (async () => {
          let n = 0;
          while (running) {
            const username = `w${i}x${n++}x${randomBytes(3).toString("hex")}`;
            try {
              const res = await users.registerUser(
                { username, email: `${username}@example.com`, password: "correct horse battery" },
                { timeoutMs: 3000 },
              );
              acked.push(res.user!.id);
            } catch {
              await pause(20);
            }
          }
        })(),
      );
      // Health by Check, polled …
      loops.push(
        (async () => {
          while (running) {
            try {
              const res = await health.check({ service: "" }, { timeoutMs: 1000 });
              checks[i]!.push({ t: Date.now(), status: res.status });
            } catch {
              checks[i]!.push({ t: Date.now(), status: "error" });
            }
            await pause(25);
          }
        })(),
      );
      // … and by one open Watch.
      loops.push(
        (async () => {
          for await (const res of health.watch({ service: "" }, { signal: abort.signal })) {
            watched[i]!.push({ t: Date.now(), status: res.status });
          }
        })().catch(() => undefined),
      );
    });

    const cycles: Array<{ stop: number; stopped: number; start: number; started: number }> = [];
    await pause(500);
    for (let c = 0; c < CYCLES; c++) {
      const stop = Date.now();
      await cluster.stop();
      const stopped = Date.now();
      await pause(OUTAGE_MS);
      const start = Date.now();
      await cluster.start();
      const started = Date.now();
      cycles.push({ stop, stopped, start, started });
      await pause(1200);
    }
    running = false;
    abort.abort();
    await Promise.all(loops);

    const figures: Record<string, unknown>[] = [];
    const outageFailures: number[][] = servers.map(() => []);
    servers.forEach((server, i) => {
      expectNoCrash(server);
      for (const [c, cycle] of cycles.entries()) {
        const during = reads[i]!.filter((r) => r.start >= cycle.stopped && r.end <= cycle.start);
        expect(during.length, `reads during outage ${c}`).toBeGreaterThan(0);
        expect(during.every((r) => !r.ok && r.code === Code.Unavailable)).toBe(true);
        const failMedian = median(during.map((r) => r.end - r.start));
        const failMax = Math.max(...during.map((r) => r.end - r.start));
        // PostgreSQL accepts connections a little before `pg_ctl -w` notices,
        // so "back" is looked for from the start command on and timed from
        // its return (early answers count as 0).
        const firstOk = reads[i]!.find((r) => r.ok && r.start >= cycle.start);
        const checkDown = checks[i]!.find(
          (x) => x.t >= cycle.stop && x.status === ServingStatus.NOT_SERVING,
        );
        const checkUp = checks[i]!.find(
          (x) => x.t >= cycle.start && x.status === ServingStatus.SERVING,
        );
        const watchDown = watched[i]!.find(
          (x) => x.t >= cycle.stop && x.status === ServingStatus.NOT_SERVING,
        );
        const watchUp = watched[i]!.find(
          (x) => x.t >= cycle.start && x.status === ServingStatus.SERVING,
        );
        const since = (t: number | undefined, from: number) =>
          t === undefined ? undefined : Math.max(0, t - from);
        const row = {
          instance: i,
          cycle: c,
          outageReads: during.length,
          failMedianMs: failMedian,
          failMaxMs: failMax,
          firstOkAfterStartMs: since(firstOk?.end, cycle.started),
          checkDownMs: since(checkDown?.t, cycle.stop),
          checkUpMs: since(checkUp?.t, cycle.started),
          watchDownMs: since(watchDown?.t, cycle.stop),
          watchUpMs: since(watchUp?.t, cycle.started),
        };
        figures.push(row);
        outageFailures[i]!.push(...during.map((r) => r.end - r.start));
        // Per outage, with slack for a shared, loaded machine (the client
        // side of the timing runs in this busy process); the overall median
        // below is held to the 100 ms target.
        expect.soft(failMedian, JSON.stringify(row)).toBeLessThan(250);
        expect.soft(failMax, JSON.stringify(row)).toBeLessThan(1000);
        expect.soft(row.firstOkAfterStartMs, JSON.stringify(row)).toBeLessThan(1000);
        expect.soft(row.checkDownMs, JSON.stringify(row)).toBeLessThan(1000);
        expect.soft(row.checkUpMs, JSON.stringify(row)).toBeLessThan(1000);
        expect.soft(row.watchDownMs, JSON.stringify(row)).toBeLessThan(1000);
        expect.soft(row.watchUpMs, JSON.stringify(row)).toBeLessThan(1000);
      }
      const overall = median(outageFailures[i]!);
      console.log(`instance ${i}: outage reads ${outageFailures[i]!.length}, median ${overall} ms`);
      expect(overall).toBeLessThan(100);
      // Watch saw every transition: SERVING first, then down/up per cycle.
      const transitions = watched[i]!.map((x) => x.status);
      expect(transitions.length).toBe(1 + 2 * CYCLES);
    });
    console.table(figures);
    for (const server of servers) {
      const failed = server.logs
        .filter((l) => l.msg === "rpc" && l.code === "unavailable")
        .map((l) => Number(l.durationMs));
      console.log(`server-side Unavailable: n=${failed.length} median=${median(failed)} ms`);
    }

    const stored = new Set(
      (await pgQuery<{ id: string }>(cluster.url, "select id from users")).map((r) => r.id),
    );
    const lost = acked.filter((id) => !stored.has(id));
    console.log(`acknowledged writes: ${acked.length}, lost: ${lost.length}`);
    expect(acked.length).toBeGreaterThan(CYCLES);
    expect(lost).toEqual([]);
  }, 90_000);
});
