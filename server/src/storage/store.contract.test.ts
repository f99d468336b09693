import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import Database from "better-sqlite3";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { Reason } from "../errors.js";
import { openStore } from "./index.js";
import { openPostgresStore } from "./postgres-store.js";
import { openSqliteStore, SQLITE_FILE_NAME } from "./sqlite-store.js";
import type { NewUser, Store, StoreKind, UserRecord } from "./store.js";

/**
 * The storage contract, run unchanged against every adapter. Each backend gets
 * one fresh location per run (a temp dir, a random PostgreSQL schema), so the
 * tests build their own cursors instead of assuming an empty table.
 */

const PG_URL = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const IN_CI = process.env.CI === "true";

/** One adapter under test. */
interface Backend {
  readonly kind: StoreKind;
  /** Set when the backend cannot run here; the suite is then skipped (never in CI). */
  readonly skipReason: string | undefined;
  setup(): Promise<void>;
  teardown(): Promise<void>;
  /** Opens a new store on this run's location (through `openStore`). */
  open(): Promise<Store>;
  /** Runs an operation that cannot reach the database; it should reject. */
  failToReach(): Promise<unknown>;
}

function sqliteBackend(): Backend {
  let dir = "";
  return {
    kind: "sqlite",
    skipReason: undefined,
    async setup() {
      dir = await mkdtemp(join(tmpdir(), "sb-store-"));
    },
    async teardown() {
      await rm(dir, { recursive: true, force: true });
    },
    open: () => openStore({ dataDir: dir }),
    async failToReach() {
      // SQLite's "unreachable" is another connection holding the write lock
      // past the busy timeout.
      const store = await openSqliteStore({ dataDir: dir, busyTimeoutMs: 50 });
      const blocker = new Database(join(dir, SQLITE_FILE_NAME));
      try {
        blocker.exec("begin exclusive");
        return await store.createUser(newUser("blocked"));
      } finally {
        blocker.exec("rollback");
        blocker.close();
        await store.close();
      }
    },
  };
}

function postgresBackend(unreachable: string | undefined): Backend {
  const schema = `sb_test_${randomBytes(6).toString("hex")}`;
  const url = new URL(PG_URL);
  url.searchParams.set("options", `-c search_path=${schema}`);
  const admin = () => new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 3000 });
  return {
    kind: "postgres",
    skipReason: IN_CI ? undefined : unreachable,
    async setup() {
      if (unreachable !== undefined) {
        throw new Error(`PostgreSQL at ${redact(PG_URL)} is unreachable (${unreachable}); CI=true`);
      }
      const client = admin();
      await client.connect();
      try {
        await client.query(`create schema ${schema}`);
      } finally {
        await client.end();
      }
    },
    async teardown() {
      if (unreachable !== undefined) {
        return;
      }
      const client = admin();
      await client.connect();
      try {
        await client.query(`drop schema if exists ${schema} cascade`);
      } finally {
        await client.end();
      }
    },
    open: () => openStore({ dataDir: tmpdir(), databaseUrl: url.href }),
    failToReach: () =>
      openPostgresStore({
        databaseUrl: "postgres://postgres@127.0.0.1:1/test",
        pool: { connectionTimeoutMillis: 1000 },
      }),
  };
}

/** Why PostgreSQL cannot be used, or undefined when it answers. */
async function probePostgres(url: string): Promise<string | undefined> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query("select 1");
    return undefined;
  } catch (error) {
    return error instanceof Error ? error.message || error.name : String(error);
  } finally {
    await client.end().catch(() => undefined);
  }
}

function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) {
      u.password = "***";
    }
    return u.href;
  } catch {
    return "<unparseable TEST_DATABASE_URL>";
  }
}

const pgUnreachable = await probePostgres(PG_URL);
if (pgUnreachable !== undefined && !IN_CI) {
  console.warn(
    `\n*** PostgreSQL store contract tests SKIPPED: cannot reach ${redact(PG_URL)} (${pgUnreachable}).` +
      "\n*** Start PostgreSQL or set TEST_DATABASE_URL; with CI=true this fails instead.\n",
  );
}

let counter = 0;

/** A user with unique username and email, so tests never collide with each other. */
function newUser(label: string, overrides: Partial<NewUser> = {}): NewUser {
  counter += 1;
  const tag = `${label}_${counter}_${randomBytes(4).toString("hex")}`;
  return {
    id: uuidv7(),
    username: tag,
    email: `${tag}@example.com`,
    displayName: `User ${tag}`,
    passwordHash: `$argon2id$v=19$m=19456,t=2,p=1$${tag}`,
    createTime: new Date(),
    ...overrides,
  };
}

/** Awaits a promise that must reject with a ConnectError and returns it. */
async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  let outcome: unknown;
  try {
    outcome = await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }
  throw new Error(`expected a rejection, got ${JSON.stringify(outcome)}`);
}

function reasonOf(error: ConnectError): string | undefined {
  return error.findDetails(ErrorInfoSchema)[0]?.reason;
}

for (const backend of [sqliteBackend(), postgresBackend(pgUnreachable)]) {
  describe.skipIf(backend.skipReason !== undefined)(`Store contract (${backend.kind})`, () => {
    let store: Store;

    beforeAll(async () => {
      await backend.setup();
      store = await backend.open();
    });

    afterAll(async () => {
      await store?.close();
      await backend.teardown();
    });

    it("reports its kind and answers ping", async () => {
      expect(store.kind).toBe(backend.kind);
      await expect(store.ping()).resolves.toBeUndefined();
    });

    it("returns every field of a created user, with createTime exact to the millisecond", async () => {
      const user = newUser("roundtrip", {
        displayName: "Zoë O'Brien — 日本",
        createTime: new Date(Date.UTC(2024, 1, 29, 23, 59, 58, 987)),
      });
      const created = await store.createUser(user);
      const fetched = await store.getUser(user.id);

      for (const record of [created, fetched]) {
        expect(record).toEqual({ ...user, seq: created.seq });
        expect(record?.createTime.getTime()).toBe(user.createTime.getTime());
      }
      expect(typeof created.seq).toBe("number");
      expect(Number.isSafeInteger(created.seq)).toBe(true);
      expect(created.seq).toBeGreaterThan(0);
    });

    it("returns undefined for an unknown id, including one that is not a UUID", async () => {
      await expect(store.getUser(uuidv7())).resolves.toBeUndefined();
      await expect(store.getUser("not-a-uuid")).resolves.toBeUndefined();
      await expect(store.getUser("")).resolves.toBeUndefined();
    });

    it("rejects a username that differs only in case with AlreadyExists USERNAME_TAKEN", async () => {
      const first = newUser("Case");
      await store.createUser(first);
      const err = await rejection(
        store.createUser(newUser("other", { username: first.username.toUpperCase() })),
      );
      expect(err.code).toBe(Code.AlreadyExists);
      expect(reasonOf(err)).toBe(Reason.USERNAME_TAKEN);
      expect(err.cause).toBeDefined();
      expect(err.rawMessage).not.toMatch(/unique|constraint|duplicate|users_/i);
    });

    it("rejects an email that differs only in case with AlreadyExists EMAIL_TAKEN", async () => {
      const first = newUser("mail");
      await store.createUser(first);
      const err = await rejection(
        store.createUser(newUser("other", { email: first.email.toUpperCase() })),
      );
      expect(err.code).toBe(Code.AlreadyExists);
      expect(reasonOf(err)).toBe(Reason.EMAIL_TAKEN);
      expect(err.cause).toBeDefined();
      expect(err.rawMessage).not.toMatch(/unique|constraint|duplicate|users_/i);
    });

    it("lets exactly one of 20 concurrent registrations of one username succeed", async () => {
      const username = newUser("race").username;
      const outcomes = await Promise.allSettled(
        Array.from({ length: 20 }, (_, i) =>
          store.createUser(
            newUser(`race${i}`, { username: i % 2 ? username : username.toUpperCase() }),
          ),
        ),
      );
      const won = outcomes.filter((o) => o.status === "fulfilled");
      const lost = outcomes.flatMap((o) => (o.status === "rejected" ? [o.reason] : []));
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(19);
      for (const reason of lost) {
        expect(reason).toBeInstanceOf(ConnectError);
        expect((reason as ConnectError).code).toBe(Code.AlreadyExists);
        expect(reasonOf(reason as ConnectError)).toBe(Reason.USERNAME_TAKEN);
      }
    });

    it("assigns strictly increasing seq in creation order, even after a rejected insert", async () => {
      const seqs: number[] = [];
      for (let i = 0; i < 5; i += 1) {
        const created = await store.createUser(newUser("order"));
        seqs.push(created.seq);
        if (i === 2) {
          await rejection(store.createUser(newUser("dup", { username: created.username })));
        }
      }
      for (let i = 1; i < seqs.length; i += 1) {
        expect(seqs[i]).toBeGreaterThan(seqs[i - 1]!);
      }
    });

    it("gives concurrently created users distinct seq values", async () => {
      const created = await Promise.all(
        Array.from({ length: 20 }, () => store.createUser(newUser("distinct"))),
      );
      expect(new Set(created.map((u) => u.seq)).size).toBe(20);
    });

    it("pages through listUsersAfter in seq order with no duplicates or gaps", async () => {
      const anchor = await store.createUser(newUser("anchor"));
      const created: UserRecord[] = [];
      for (let i = 0; i < 25; i += 1) {
        created.push(await store.createUser(newUser("page")));
      }

      const pages: UserRecord[][] = [];
      let cursor = anchor.seq;
      for (;;) {
        const page = await store.listUsersAfter(cursor, 10);
        if (page.length === 0) {
          break;
        }
        pages.push(page);
        cursor = page.at(-1)!.seq;
      }

      expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
      const seen = pages.flat();
      expect(seen.map((u) => u.id)).toEqual(created.map((u) => u.id));
      expect(seen).toEqual(created);
      await expect(store.listUsersAfter(anchor.seq, 0)).resolves.toEqual([]);
    });

    it("never lets a reader following seq miss a concurrently committed user", async () => {
      // The reader has its own connections, as a feed on a busy server would,
      // so it is not queued behind the writers in the pool. Out-of-order
      // commits are a race, so several rounds make a regression likely to show.
      const feed = await backend.open();
      try {
        for (let round = 0; round < 3; round += 1) {
          const anchor = await store.createUser(newUser("feed"));
          const state: { created?: UserRecord[] } = {};
          const writing = Promise.all(
            Array.from({ length: 30 }, () => store.createUser(newUser("feed"))),
          ).then((users) => {
            state.created = users;
          });

          // Poll while the writes are in flight, as a live feed does: a row
          // that became visible after one with a larger seq would fall behind
          // the cursor and never be seen.
          const seen = new Set<string>();
          let cursor = anchor.seq;
          const deadline = Date.now() + 15_000;
          while (Date.now() < deadline) {
            const writesDone = state.created !== undefined;
            const page = await feed.listUsersAfter(cursor, 7);
            for (const user of page) {
              expect(user.seq).toBeGreaterThan(cursor);
              seen.add(user.id);
              cursor = user.seq;
            }
            if (writesDone && page.length === 0) {
              break;
            }
          }
          await writing;
          expect(state.created?.filter((u) => !seen.has(u.id))).toEqual([]);
          expect(seen.size).toBe(30);
        }
      } finally {
        await feed.close();
      }
    });

    it("keeps data across close and reopen", async () => {
      const writer = await backend.open();
      const user = newUser("durable");
      const created = await writer.createUser(user);
      await writer.close();

      const reader = await backend.open();
      try {
        await expect(reader.getUser(user.id)).resolves.toEqual(created);
      } finally {
        await reader.close();
      }
    });

    it("opens an already-migrated database again without changes", async () => {
      const before = await store.createUser(newUser("migrate"));
      const again = await backend.open();
      const third = await backend.open();
      try {
        await expect(again.getUser(before.id)).resolves.toEqual(before);
        const next = await third.createUser(newUser("migrate"));
        expect(next.seq).toBeGreaterThan(before.seq);
      } finally {
        await again.close();
        await third.close();
      }
    });

    it("rejects every call with an aborted signal before touching the database", async () => {
      const controller = new AbortController();
      controller.abort();
      const signal = controller.signal;
      const user = newUser("aborted");

      for (const call of [
        store.createUser(user, { signal }),
        store.getUser(user.id, { signal }),
        store.listUsersAfter(0, 10, { signal }),
        store.ping({ signal }),
      ]) {
        expect((await rejection(call)).code).toBe(Code.Canceled);
      }
      await expect(store.getUser(user.id)).resolves.toBeUndefined();
    });

    it("propagates a ConnectError abort reason unchanged and maps timeouts to DeadlineExceeded", async () => {
      const reason = new ConnectError("client went away", Code.Canceled);
      const connectAbort = await rejection(store.ping({ signal: AbortSignal.abort(reason) }));
      expect(connectAbort).toBe(reason);

      const timeout = AbortSignal.abort(new DOMException("timed out", "TimeoutError"));
      expect((await rejection(store.ping({ signal: timeout }))).code).toBe(Code.DeadlineExceeded);
    });

    it("maps a database it cannot reach to Unavailable", async () => {
      const err = await rejection(backend.failToReach());
      expect(err.code).toBe(Code.Unavailable);
      expect(err.cause).toBeDefined();
    });

    it("closes idempotently and then rejects calls with Unavailable", async () => {
      const extra = await backend.open();
      await extra.close();
      await expect(extra.close()).resolves.toBeUndefined();
      expect((await rejection(extra.ping())).code).toBe(Code.Unavailable);
    });
  });
}
