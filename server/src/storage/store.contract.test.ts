import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import Database from "better-sqlite3";
import { Kysely, Migrator, PostgresDialect, SqliteDialect } from "kysely";
import pg from "pg";
import { v7 as uuidv7 } from "uuid";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { Reason } from "../errors.js";
import { openStore } from "./index.js";
import { migrationProvider } from "./migrations/index.js";
import { openPostgresStore } from "./postgres-store.js";
import type { Database as Tables } from "./schema.js";
import { openSqliteStore, SQLITE_FILE_NAME } from "./sqlite-store.js";
import type {
  ChatMessageRecord,
  NewChatMessage,
  NewSession,
  NewUser,
  Store,
  StoreKind,
  UserRecord,
} from "./store.js";

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
  /**
   * A second, empty location with a raw Kysely handle on it (for migration
   * tests) and a way to open a store there. The caller destroys `db` before
   * opening a store; `dispose` then removes the location.
   */
  fresh(): Promise<FreshLocation>;
}

interface FreshLocation {
  readonly db: Kysely<Tables>;
  /** Where Kysely keeps its migration bookkeeping (PostgreSQL needs it named). */
  readonly migrationTableSchema: string | undefined;
  open(): Promise<Store>;
  dispose(): Promise<void>;
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
    async fresh() {
      const sub = await mkdtemp(join(dir, "fresh-"));
      const db = new Kysely<Tables>({
        dialect: new SqliteDialect({ database: new Database(join(sub, SQLITE_FILE_NAME)) }),
      });
      return {
        db,
        migrationTableSchema: undefined,
        open: () => openStore({ dataDir: sub }),
        // The directory goes with the run's temp dir.
        dispose: async () => undefined,
      };
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
    async fresh() {
      // A schema of its own, dropped with the main one's siblings at teardown.
      const freshSchema = `${schema}_f${randomBytes(3).toString("hex")}`;
      const freshUrl = new URL(PG_URL);
      freshUrl.searchParams.set("options", `-c search_path=${freshSchema}`);
      const client = admin();
      await client.connect();
      try {
        await client.query(`create schema ${freshSchema}`);
      } finally {
        await client.end();
      }
      const db = new Kysely<Tables>({
        dialect: new PostgresDialect({
          pool: new pg.Pool({ connectionString: freshUrl.href, max: 2 }),
        }),
      });
      return {
        db,
        migrationTableSchema: freshSchema,
        open: () => openStore({ dataDir: tmpdir(), databaseUrl: freshUrl.href }),
        async dispose() {
          const c = admin();
          await c.connect();
          try {
            await c.query(`drop schema if exists ${freshSchema} cascade`);
          } finally {
            await c.end();
          }
        },
      };
    },
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

/** A session of `userId` in a family of its own, with a random token hash. */
function newSession(userId: string, overrides: Partial<NewSession> = {}): NewSession {
  const createTime = new Date(Date.UTC(2025, 0, 2, 3, 4, 5, 678));
  return {
    id: uuidv7(),
    familyId: uuidv7(),
    userId,
    refreshTokenHash: randomBytes(32).toString("hex"),
    userAgent: "contract-test/1.0 (Zoë)",
    clientIp: "203.0.113.9",
    createTime,
    expireTime: new Date(createTime.getTime() + 30 * 24 * 3600 * 1000 + 1),
    ...overrides,
  };
}

/** A room name no other test (or run) uses. */
function newRoom(label: string): string {
  return `${label}-${randomBytes(6).toString("hex")}`;
}

/** A message by `sender` in `room` with a fresh idempotency key. */
function newMessage(
  room: string,
  sender: UserRecord,
  overrides: Partial<NewChatMessage> = {},
): NewChatMessage {
  return {
    room,
    senderId: sender.id,
    senderUsername: sender.username,
    text: `hello ${randomBytes(3).toString("hex")}`,
    clientMsgId: uuidv7(),
    createTime: new Date(Date.UTC(2025, 2, 4, 5, 6, 7, 891)),
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
        expect(record).toEqual({ ...user, role: "user", seq: created.seq });
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

    it("reports the largest seq as lastUserSeq", async () => {
      const created = await store.createUser(newUser("last"));
      await expect(store.lastUserSeq()).resolves.toBe(created.seq);
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

      const session = newSession(user.id);
      for (const call of [
        store.createUser(user, { signal }),
        store.getUser(user.id, { signal }),
        store.listUsersAfter(0, 10, { signal }),
        store.lastUserSeq({ signal }),
        store.findUserByLogin(user.username, { signal }),
        store.setUserRole([user.username], "admin", { signal }),
        store.createSession(session, { signal }),
        store.findSessionByTokenHash(session.refreshTokenHash, { signal }),
        store.rotateSession(session.id, newSession(user.id), { signal }),
        store.revokeSession(session.id, new Date(), { signal }),
        store.revokeSessionFamily(session.familyId, new Date(), { signal }),
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

    describe("users: roles and login lookup", () => {
      it("gives new users the role 'user' unless another is given", async () => {
        const plain = await store.createUser(newUser("plain"));
        const admin = await store.createUser(newUser("admin", { role: "admin" }));
        expect(plain.role).toBe("user");
        expect(admin.role).toBe("admin");
        expect((await store.getUser(plain.id))?.role).toBe("user");
        expect((await store.getUser(admin.id))?.role).toBe("admin");
      });

      it("finds a user by username or by email, case-insensitively", async () => {
        const user = await store.createUser(newUser("Login"));
        for (const login of [
          user.username,
          user.username.toUpperCase(),
          user.username.toLowerCase(),
          user.email,
          user.email.toUpperCase(),
        ]) {
          await expect(store.findUserByLogin(login)).resolves.toEqual(user);
        }
      });

      it("finds nothing for an unknown login, an empty one, or SQL wildcards", async () => {
        const user = await store.createUser(newUser("wild"));
        await expect(store.findUserByLogin(`${user.username}x`)).resolves.toBeUndefined();
        await expect(store.findUserByLogin("")).resolves.toBeUndefined();
        await expect(store.findUserByLogin("%")).resolves.toBeUndefined();
        await expect(
          store.findUserByLogin(`${user.username.slice(0, -1)}_`),
        ).resolves.toBeUndefined();
        await expect(store.findUserByLogin("' or 1=1 --")).resolves.toBeUndefined();
      });

      it("prefers a username match over another user's email match", async () => {
        // The service's rules keep '@' out of usernames; the store does not.
        const byEmail = await store.createUser(newUser("mailowner"));
        const byName = await store.createUser(
          newUser("nameowner", { username: byEmail.email.toUpperCase() }),
        );
        await expect(store.findUserByLogin(byEmail.email)).resolves.toEqual(byName);
      });

      it("sets roles by username case-insensitively and counts only rows that changed", async () => {
        const a = await store.createUser(newUser("promote"));
        const b = await store.createUser(newUser("promote"));
        const bystander = await store.createUser(newUser("bystander"));

        await expect(
          store.setUserRole([a.username.toUpperCase(), b.username, "nobody-at-all"], "admin"),
        ).resolves.toBe(2);
        await expect(store.setUserRole([a.username, b.username], "admin")).resolves.toBe(0);
        expect((await store.getUser(a.id))?.role).toBe("admin");
        expect((await store.getUser(b.id))?.role).toBe("admin");
        expect((await store.getUser(bystander.id))?.role).toBe("user");

        await expect(store.setUserRole([a.username], "user")).resolves.toBe(1);
        expect((await store.getUser(a.id))?.role).toBe("user");
        await expect(store.setUserRole([], "admin")).resolves.toBe(0);
      });

      it("gives users created before migration 0002 the role 'user'", async () => {
        const fresh = await backend.fresh();
        try {
          const migrator = new Migrator({
            db: fresh.db,
            provider: migrationProvider(backend.kind),
            ...(fresh.migrationTableSchema === undefined
              ? {}
              : { migrationTableSchema: fresh.migrationTableSchema }),
          });
          const { error } = await migrator.migrateTo("0001-users");
          expect(error).toBeUndefined();
          const old = newUser("legacy");
          await fresh.db
            .insertInto("users")
            .values({
              id: old.id,
              username: old.username,
              email: old.email,
              display_name: old.displayName,
              password_hash: old.passwordHash,
              ...(backend.kind === "postgres"
                ? { create_time: old.createTime }
                : { create_time: old.createTime.getTime(), seq: 1 }),
            })
            .execute();
          const tables = (await fresh.db.introspection.getTables()).filter(
            (t) =>
              fresh.migrationTableSchema === undefined || t.schema === fresh.migrationTableSchema,
          );
          expect(tables.map((t) => t.name)).toContain("users");
          expect(tables.map((t) => t.name)).not.toContain("sessions");
        } finally {
          await fresh.db.destroy();
        }

        const migrated = await fresh.open();
        try {
          const [legacy] = await migrated.listUsersAfter(0, 10);
          expect(legacy?.role).toBe("user");
          const session = await migrated.createSession(newSession(legacy!.id));
          await expect(migrated.findSessionByTokenHash(session.refreshTokenHash)).resolves.toEqual(
            session,
          );
        } finally {
          await migrated.close();
          await fresh.dispose();
        }
      });

      it("refuses a role other than 'user' or 'admin' at the database", async () => {
        const user = await store.createUser(newUser("checked"));
        const err = await rejection(
          store.setUserRole([user.username], "root" as unknown as "admin"),
        );
        expect(err.code).toBe(Code.Internal);
        expect((await store.getUser(user.id))?.role).toBe("user");
      });
    });

    describe("sessions", () => {
      let owner: UserRecord;

      beforeAll(async () => {
        owner = await store.createUser(newUser("owner"));
      });

      it("returns every field of a created session, times exact to the millisecond", async () => {
        const session = newSession(owner.id);
        const created = await store.createSession(session);
        const found = await store.findSessionByTokenHash(session.refreshTokenHash);
        for (const record of [created, found]) {
          expect(record).toEqual({ ...session, revokeTime: undefined, replacedBy: undefined });
          expect(record?.createTime.getTime()).toBe(session.createTime.getTime());
          expect(record?.expireTime.getTime()).toBe(session.expireTime.getTime());
        }
        await expect(
          store.findSessionByTokenHash(randomBytes(32).toString("hex")),
        ).resolves.toBeUndefined();
        await expect(store.findSessionByTokenHash("")).resolves.toBeUndefined();
      });

      it("rejects a session of an unknown user with FailedPrecondition", async () => {
        const session = newSession(uuidv7());
        const err = await rejection(store.createSession(session));
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.cause).toBeDefined();
        expect(err.rawMessage).not.toMatch(/foreign|constraint|sessions|users/i);
        await expect(
          store.findSessionByTokenHash(session.refreshTokenHash),
        ).resolves.toBeUndefined();
      });

      it("rejects a second session with the same token hash, keeping the first", async () => {
        const first = await store.createSession(newSession(owner.id));
        const err = await rejection(
          store.createSession(newSession(owner.id, { refreshTokenHash: first.refreshTokenHash })),
        );
        expect(err.code).toBe(Code.Internal);
        expect(err.rawMessage).toBe("internal error");
        await expect(store.findSessionByTokenHash(first.refreshTokenHash)).resolves.toEqual(first);
      });

      it("keeps the sealed successor token given to rotateSession with the rotated session", async () => {
        const old = await store.createSession(newSession(owner.id));
        expect(old.successorTokenBox).toBeUndefined();
        const next = newSession(owner.id, { familyId: old.familyId });
        await expect(
          store.rotateSession(old.id, next, { successorTokenBox: "sealed-successor" }),
        ).resolves.toBe(true);
        const rotated = await store.findSessionByTokenHash(old.refreshTokenHash);
        expect(rotated?.successorTokenBox).toBe("sealed-successor");
        const fresh = await store.findSessionByTokenHash(next.refreshTokenHash);
        expect(fresh?.successorTokenBox).toBeUndefined();
      });

      it("rotates a session once: revokes and links the old one, inserts the new one", async () => {
        const old = await store.createSession(newSession(owner.id));
        const nextTime = new Date(old.createTime.getTime() + 60_000);
        const next = newSession(owner.id, { familyId: old.familyId, createTime: nextTime });

        await expect(store.rotateSession(old.id, next)).resolves.toBe(true);
        await expect(store.findSessionByTokenHash(old.refreshTokenHash)).resolves.toEqual({
          ...old,
          revokeTime: nextTime,
          replacedBy: next.id,
        });
        await expect(store.findSessionByTokenHash(next.refreshTokenHash)).resolves.toEqual({
          ...next,
          revokeTime: undefined,
          replacedBy: undefined,
        });

        // Replaying the old session changes nothing and inserts nothing.
        const replay = newSession(owner.id, { familyId: old.familyId });
        await expect(store.rotateSession(old.id, replay)).resolves.toBe(false);
        await expect(
          store.findSessionByTokenHash(replay.refreshTokenHash),
        ).resolves.toBeUndefined();
        expect((await store.findSessionByTokenHash(old.refreshTokenHash))?.replacedBy).toBe(
          next.id,
        );
      });

      it("does not rotate an unknown or a logged-out session", async () => {
        const unknown = newSession(owner.id);
        await expect(store.rotateSession(uuidv7(), unknown)).resolves.toBe(false);
        await expect(
          store.findSessionByTokenHash(unknown.refreshTokenHash),
        ).resolves.toBeUndefined();

        const old = await store.createSession(newSession(owner.id));
        await store.revokeSession(old.id, new Date());
        const next = newSession(owner.id, { familyId: old.familyId });
        await expect(store.rotateSession(old.id, next)).resolves.toBe(false);
        await expect(store.findSessionByTokenHash(next.refreshTokenHash)).resolves.toBeUndefined();
        expect((await store.findSessionByTokenHash(old.refreshTokenHash))?.replacedBy).toBe(
          undefined,
        );
      });

      it("leaves the old session live when inserting its successor fails", async () => {
        const old = await store.createSession(newSession(owner.id));
        const taken = await store.createSession(newSession(owner.id));
        const clash = newSession(owner.id, {
          familyId: old.familyId,
          refreshTokenHash: taken.refreshTokenHash,
        });
        expect((await rejection(store.rotateSession(old.id, clash))).code).toBe(Code.Internal);
        await expect(store.findSessionByTokenHash(old.refreshTokenHash)).resolves.toEqual(old);
      });

      /**
       * Races `attempts` rotations of one fresh session, spread over the
       * given stores, and checks exactly one won and only its successor exists.
       */
      async function raceRotations(stores: readonly Store[], attempts: number): Promise<void> {
        const old = await store.createSession(newSession(owner.id));
        const nexts = Array.from({ length: attempts }, () =>
          newSession(owner.id, { familyId: old.familyId }),
        );
        const results = await Promise.all(
          nexts.map((next, i) => stores[i % stores.length]!.rotateSession(old.id, next)),
        );
        expect(results.filter(Boolean)).toHaveLength(1);
        const winner = nexts[results.indexOf(true)]!;
        const stored = await Promise.all(
          nexts.map((n) => store.findSessionByTokenHash(n.refreshTokenHash)),
        );
        expect(stored.filter((s) => s !== undefined).map((s) => s?.id)).toEqual([winner.id]);
        expect((await store.findSessionByTokenHash(old.refreshTokenHash))?.replacedBy).toBe(
          winner.id,
        );
      }

      it("lets exactly one of two concurrent rotations of one session win", async () => {
        for (let round = 0; round < 5; round += 1) {
          await raceRotations([store], 2);
        }
        await raceRotations([store], 10);
      });

      // Only PostgreSQL here: better-sqlite3 is synchronous, so a second SQLite
      // connection in the *same process* would wait for the write lock inside
      // the event loop the first connection's transaction needs to finish
      // (a self-deadlock until the busy timeout). A process uses one store,
      // whose transactions Kysely runs one at a time; separate processes are
      // serialised by SQLite's write lock.
      if (backend.kind === "postgres") {
        it("lets exactly one of concurrent rotations of one session win, across connections", async () => {
          const other = await backend.open();
          try {
            for (let round = 0; round < 3; round += 1) {
              await raceRotations([store, other], 8);
            }
          } finally {
            await other.close();
          }
        });
      }

      it("revokes one live session once, leaving the rest of its family live", async () => {
        const a = await store.createSession(newSession(owner.id));
        const b = await store.createSession(newSession(owner.id, { familyId: a.familyId }));
        const at = new Date(Date.UTC(2025, 5, 6, 7, 8, 9, 123));

        await expect(store.revokeSession(a.id, at)).resolves.toBe(1);
        await expect(store.revokeSession(a.id, new Date())).resolves.toBe(0);
        await expect(store.revokeSession(uuidv7(), new Date())).resolves.toBe(0);

        const revoked = await store.findSessionByTokenHash(a.refreshTokenHash);
        expect(revoked?.revokeTime?.getTime()).toBe(at.getTime());
        expect(revoked?.replacedBy).toBeUndefined();
        expect((await store.findSessionByTokenHash(b.refreshTokenHash))?.revokeTime).toBe(
          undefined,
        );
      });

      it("revokes every live session of a family, keeping earlier revoke times and other families", async () => {
        const first = await store.createSession(newSession(owner.id));
        const rotated = newSession(owner.id, {
          familyId: first.familyId,
          createTime: new Date(first.createTime.getTime() + 1000),
        });
        await store.rotateSession(first.id, rotated);
        const sibling = await store.createSession(
          newSession(owner.id, { familyId: first.familyId }),
        );
        const stranger = await store.createSession(newSession(owner.id));
        const at = new Date(Date.UTC(2025, 5, 6, 7, 8, 9, 456));

        await expect(store.revokeSessionFamily(first.familyId, at)).resolves.toBe(2);
        await expect(store.revokeSessionFamily(first.familyId, new Date())).resolves.toBe(0);

        const find = (s: NewSession) => store.findSessionByTokenHash(s.refreshTokenHash);
        expect((await find(first))?.revokeTime).toEqual(rotated.createTime);
        expect((await find(rotated))?.revokeTime).toEqual(at);
        expect((await find(sibling))?.revokeTime).toEqual(at);
        expect((await find(stranger))?.revokeTime).toBeUndefined();
        await expect(store.revokeSessionFamily(uuidv7(), at)).resolves.toBe(0);
      });
    });

    describe("chat messages", () => {
      let alice: UserRecord;
      let bob: UserRecord;

      beforeAll(async () => {
        alice = await store.createUser(newUser("alice"));
        bob = await store.createUser(newUser("bob"));
      });

      /** Appends `count` messages one after another and returns them. */
      async function appendSeries(
        room: string,
        count: number,
        sender = alice,
      ): Promise<ChatMessageRecord[]> {
        const out: ChatMessageRecord[] = [];
        for (let i = 0; i < count; i += 1) {
          const { message, created } = await store.appendMessage(
            newMessage(room, sender, { text: `m${i + 1}` }),
          );
          expect(created).toBe(true);
          out.push(message);
        }
        return out;
      }

      it("returns every field of an appended message, createTime exact to the millisecond", async () => {
        const room = newRoom("roundtrip");
        const input = newMessage(room, alice, { text: "Zoë says «hi» — 日本 🎉\nline two" });
        const { message, created } = await store.appendMessage(input);
        expect(created).toBe(true);
        expect(message).toEqual({
          room,
          id: 1,
          senderId: alice.id,
          senderUsername: alice.username,
          text: input.text,
          clientMsgId: input.clientMsgId,
          createTime: input.createTime,
        });
        expect(typeof message.id).toBe("number");
        await expect(store.listMessagesAfter(room, 0, 10)).resolves.toEqual([message]);
      });

      it("numbers messages 1, 2, 3, … per room, each room independently", async () => {
        const red = newRoom("red");
        const blue = newRoom("blue");
        const r1 = await store.appendMessage(newMessage(red, alice));
        const b1 = await store.appendMessage(newMessage(blue, bob));
        const r2 = await store.appendMessage(newMessage(red, bob));
        const b2 = await store.appendMessage(newMessage(blue, alice));
        const r3 = await store.appendMessage(newMessage(red, alice));
        expect([r1, r2, r3].map((r) => r.message.id)).toEqual([1, 2, 3]);
        expect([b1, b2].map((r) => r.message.id)).toEqual([1, 2]);
        expect((await store.listMessagesAfter(red, 0, 10)).map((m) => m.senderId)).toEqual([
          alice.id,
          bob.id,
          alice.id,
        ]);
        expect((await store.listMessagesAfter(blue, 0, 10)).map((m) => m.room)).toEqual([
          blue,
          blue,
        ]);
      });

      it("reports the newest id, 0 for a room without messages", async () => {
        const room = newRoom("last");
        await expect(store.lastMessageId(room)).resolves.toBe(0);
        await appendSeries(room, 3);
        await expect(store.lastMessageId(room)).resolves.toBe(3);
        await expect(store.lastMessageId(newRoom("empty"))).resolves.toBe(0);
      });

      it("pages forward with listMessagesAfter, oldest first", async () => {
        const room = newRoom("after");
        const all = await appendSeries(room, 25);
        await appendSeries(newRoom("noise"), 3);

        const pages: ChatMessageRecord[][] = [];
        let cursor = 0;
        for (;;) {
          const page = await store.listMessagesAfter(room, cursor, 10);
          if (page.length === 0) {
            break;
          }
          pages.push(page);
          cursor = page.at(-1)!.id;
        }
        expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
        expect(pages.flat()).toEqual(all);
        await expect(store.listMessagesAfter(room, 20, 100)).resolves.toEqual(all.slice(20));
        await expect(store.listMessagesAfter(room, 25, 10)).resolves.toEqual([]);
        await expect(store.listMessagesAfter(room, 0, 0)).resolves.toEqual([]);
        await expect(store.listMessagesAfter(newRoom("none"), 0, 10)).resolves.toEqual([]);
      });

      it("pages backward with listMessagesBefore: the newest below beforeId, oldest first", async () => {
        const room = newRoom("before");
        const all = await appendSeries(room, 25);

        // beforeId 0 means "from the newest".
        await expect(store.listMessagesBefore(room, 0, 10)).resolves.toEqual(all.slice(15));
        await expect(store.listMessagesBefore(room, 16, 10)).resolves.toEqual(all.slice(5, 15));
        await expect(store.listMessagesBefore(room, 6, 10)).resolves.toEqual(all.slice(0, 5));
        await expect(store.listMessagesBefore(room, 1, 10)).resolves.toEqual([]);
        await expect(store.listMessagesBefore(room, 100, 3)).resolves.toEqual(all.slice(22));
        await expect(store.listMessagesBefore(room, 0, 0)).resolves.toEqual([]);
        await expect(store.listMessagesBefore(newRoom("none"), 0, 10)).resolves.toEqual([]);

        const pages: ChatMessageRecord[][] = [];
        let cursor = 0;
        for (;;) {
          const page = await store.listMessagesBefore(room, cursor, 10);
          if (page.length === 0) {
            break;
          }
          pages.push(page);
          cursor = page[0]!.id;
          if (cursor === 1) {
            break;
          }
        }
        expect(pages.map((p) => p.length)).toEqual([10, 10, 5]);
        expect(pages.reverse().flat()).toEqual(all);
      });

      it("rejects non-integer or negative paging arguments with Internal", async () => {
        const room = newRoom("args");
        for (const call of [
          store.listMessagesAfter(room, 1.5, 10),
          store.listMessagesAfter(room, 0, -1),
          store.listMessagesAfter(room, 0, Number.NaN),
          store.listMessagesBefore(room, -1, 10),
          store.listMessagesBefore(room, 0, -1),
          store.listMessagesBefore(room, 2 ** 60, 10),
        ]) {
          expect((await rejection(call)).code).toBe(Code.Internal);
        }
      });

      it("is idempotent on (room, sender, clientMsgId): a repeat stores nothing", async () => {
        const room = newRoom("idem");
        const input = newMessage(room, alice);
        const first = await store.appendMessage(input);
        const again = await store.appendMessage({
          ...input,
          text: "different text",
          createTime: new Date(),
        });
        expect(first.created).toBe(true);
        expect(again).toEqual({ message: first.message, created: false });

        // The same key from another sender, or in another room, is a new message.
        const other = await store.appendMessage({
          ...input,
          senderId: bob.id,
          senderUsername: bob.username,
        });
        expect(other.created).toBe(true);
        expect(other.message.id).toBe(2);
        const elsewhere = await store.appendMessage({ ...input, room: newRoom("idem-other") });
        expect(elsewhere).toMatchObject({ created: true, message: { id: 1 } });

        // The repeat consumed no id.
        const next = await store.appendMessage(newMessage(room, alice));
        expect(next.message.id).toBe(3);
        expect((await store.listMessagesAfter(room, 0, 10)).map((m) => m.id)).toEqual([1, 2, 3]);
      });

      /** Runs `count` identical appends at once over `stores`; exactly one stores a row. */
      async function raceIdentical(stores: readonly Store[], count: number): Promise<void> {
        const room = newRoom("idem-race");
        await store.appendMessage(newMessage(room, bob));
        const input = newMessage(room, alice);
        const results = await Promise.all(
          Array.from({ length: count }, (_, i) => stores[i % stores.length]!.appendMessage(input)),
        );
        expect(results.filter((r) => r.created)).toHaveLength(1);
        for (const r of results) {
          expect(r.message).toEqual(results[0]!.message);
        }
        expect(results[0]!.message.id).toBe(2);
        const stored = await store.listMessagesAfter(room, 0, 100);
        expect(stored.map((m) => m.id)).toEqual([1, 2]);
      }

      it("stores one row for 10 concurrent identical appends, all returning it", async () => {
        for (let round = 0; round < 3; round += 1) {
          await raceIdentical([store], 10);
        }
      });

      /** Appends `count` messages to one room at once over `stores`; ids must be 1..count. */
      async function raceAppends(stores: readonly Store[], count: number): Promise<void> {
        const room = newRoom("burst");
        const inputs = Array.from({ length: count }, (_, i) =>
          newMessage(room, i % 2 ? alice : bob, { text: `burst ${i}` }),
        );
        const results = await Promise.all(
          inputs.map((m, i) => stores[i % stores.length]!.appendMessage(m)),
        );
        expect(results.every((r) => r.created)).toBe(true);
        const ids = results.map((r) => r.message.id).sort((a, b) => a - b);
        expect(ids).toEqual(Array.from({ length: count }, (_, i) => i + 1));
        const stored = await store.listMessagesAfter(room, 0, count + 10);
        expect(stored.map((m) => m.id)).toEqual(ids);
        expect(new Set(stored.map((m) => m.clientMsgId))).toEqual(
          new Set(inputs.map((m) => m.clientMsgId)),
        );
        await expect(store.lastMessageId(room)).resolves.toBe(count);
      }

      it("gives 30 concurrent appends to one room exactly the ids 1..30", async () => {
        await raceAppends([store], 30);
      });

      // See the rotation race below for why SQLite gets no cross-connection variant.
      if (backend.kind === "postgres") {
        it("keeps ids gapless and appends idempotent across connections", async () => {
          const other = await backend.open();
          try {
            for (let round = 0; round < 3; round += 1) {
              await raceAppends([store, other], 30);
              await raceIdentical([store, other], 10);
            }
          } finally {
            await other.close();
          }
        });
      }

      it("never lets a reader following ids miss a concurrently appended message", async () => {
        // As for users: the reader has its own connections, and several rounds
        // make an out-of-order commit likely to show.
        const feed = await backend.open();
        try {
          for (let round = 0; round < 3; round += 1) {
            const room = newRoom("follow");
            const state: { created?: ChatMessageRecord[] } = {};
            const writing = Promise.all(
              Array.from({ length: 30 }, (_, i) =>
                store.appendMessage(newMessage(room, i % 2 ? alice : bob)),
              ),
            ).then((results) => {
              state.created = results.map((r) => r.message);
            });

            const seen: number[] = [];
            let cursor = 0;
            const deadline = Date.now() + 15_000;
            while (Date.now() < deadline) {
              const writesDone = state.created !== undefined;
              const page = await feed.listMessagesAfter(room, cursor, 4);
              for (const message of page) {
                // Following ids, the next one seen is always cursor + 1.
                expect(message.id).toBe(cursor + 1);
                seen.push(message.id);
                cursor = message.id;
              }
              if (writesDone && page.length === 0) {
                break;
              }
            }
            await writing;
            expect(seen).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
          }
        } finally {
          await feed.close();
        }
      });

      it("rejects a message from an unknown sender with FailedPrecondition, using no id", async () => {
        const room = newRoom("ghost");
        await store.appendMessage(newMessage(room, alice));
        const ghost = { ...alice, id: uuidv7() };
        const err = await rejection(store.appendMessage(newMessage(room, ghost)));
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.cause).toBeDefined();
        expect(err.rawMessage).not.toMatch(/foreign|constraint|chat_messages|users/i);
        await expect(store.lastMessageId(room)).resolves.toBe(1);
        const next = await store.appendMessage(newMessage(room, bob));
        expect(next.message.id).toBe(2);
      });

      it("rejects every chat call with an aborted signal before touching the database", async () => {
        const room = newRoom("aborted");
        const signal = AbortSignal.abort();
        for (const call of [
          store.appendMessage(newMessage(room, alice), { signal }),
          store.listMessagesAfter(room, 0, 10, { signal }),
          store.listMessagesBefore(room, 0, 10, { signal }),
          store.lastMessageId(room, { signal }),
        ]) {
          expect((await rejection(call)).code).toBe(Code.Canceled);
        }
        const timeout = AbortSignal.abort(new DOMException("timed out", "TimeoutError"));
        expect((await rejection(store.lastMessageId(room, { signal: timeout }))).code).toBe(
          Code.DeadlineExceeded,
        );
        await expect(store.lastMessageId(room)).resolves.toBe(0);
      });

      it("keeps messages across close and reopen", async () => {
        const room = newRoom("durable");
        const writer = await backend.open();
        const { message } = await writer.appendMessage(newMessage(room, alice));
        await writer.close();
        const reader = await backend.open();
        try {
          await expect(reader.listMessagesAfter(room, 0, 10)).resolves.toEqual([message]);
          const again = await reader.appendMessage(newMessage(room, alice));
          expect(again.message.id).toBe(2);
        } finally {
          await reader.close();
        }
      });
    });
  });
}
