import { join } from "node:path";
import { ConnectError } from "@connectrpc/connect";
import Database from "better-sqlite3";
import { Kysely, SqliteDialect } from "kysely";
import { alreadyExists, failedPrecondition, internal, Reason, unavailable } from "../errors.js";
import { createKyselyStore, type StoreLogger } from "./kysely-store.js";
import { migrateToLatest } from "./migrations/index.js";
import { ensurePrivateDir, ensurePrivateFile, tightenIfPresent } from "./private-files.js";
import type { Database as Tables } from "./schema.js";
import { withStatementCache } from "./statement-cache.js";
import type { Store } from "./store.js";

/** File name of the database inside the data directory. */
export const SQLITE_FILE_NAME = "switchboard.db";

/** Options for {@link openSqliteStore}. */
export interface SqliteStoreOptions {
  /** Directory for the database file (and its WAL); created 0700 if missing. */
  readonly dataDir: string;
  readonly logger?: StoreLogger;
  /**
   * How long a write waits for another connection's lock before failing with
   * Unavailable. Default 5000 ms; tests shorten it.
   */
  readonly busyTimeoutMs?: number;
}

/** Opens (creating and migrating if needed) the embedded SQLite database. */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<Store> {
  const file = join(options.dataDir, SQLITE_FILE_NAME);
  let sqlite: Database.Database | undefined;
  try {
    await ensurePrivateDir(options.dataDir);
    // Created 0600 before SQLite opens it, so its WAL and shm files get the
    // same mode; those of an older, world-readable database are tightened.
    await ensurePrivateFile(file);
    await Promise.all([tightenIfPresent(`${file}-wal`), tightenIfPresent(`${file}-shm`)]);
    sqlite = new Database(file);
    configure(sqlite, options);
  } catch (error) {
    sqlite?.close();
    throw translateSqliteError(error);
  }
  const db = new Kysely<Tables>({
    dialect: new SqliteDialect({ database: withStatementCache(sqlite) }),
  });
  try {
    await migrateToLatest(db, "sqlite", options.logger ? { logger: options.logger } : {});
  } catch (error) {
    await db.destroy().catch(() => undefined);
    throw translateSqliteError(error);
  }
  options.logger?.info({ kind: "sqlite", file }, "storage opened");
  return createKyselyStore({ kind: "sqlite", db, translateError: translateSqliteError });
}

function configure(sqlite: Database.Database, options: SqliteStoreOptions): void {
  // WAL lets readers proceed while a write commits; NORMAL sync is durable
  // against process crashes under WAL (only an OS crash can lose the last
  // commits), which suits this workload.
  const mode = sqlite.pragma("journal_mode = WAL", { simple: true });
  if (mode !== "wal") {
    options.logger?.warn({ kind: "sqlite", mode }, "SQLite could not enable WAL mode");
  }
  sqlite.pragma(`busy_timeout = ${Math.max(0, Math.trunc(options.busyTimeoutMs ?? 5000))}`);
  sqlite.pragma("foreign_keys = ON");
  sqlite.pragma("synchronous = NORMAL");
}

/**
 * Index names whose unique violations mean a taken username or email. SQLite
 * names the index in the message for expression indexes
 * ("UNIQUE constraint failed: index 'users_username_key'").
 */
const UNIQUE_INDEX_REASONS: ReadonlyArray<readonly [string, Reason, string]> = [
  ["users_username_key", Reason.USERNAME_TAKEN, "username"],
  ["users_email_key", Reason.EMAIL_TAKEN, "email"],
];

/** Lock contention: another connection holds the database; retrying later can succeed. */
const UNAVAILABLE_CODES = new Set([
  "SQLITE_BUSY",
  "SQLITE_BUSY_RECOVERY",
  "SQLITE_BUSY_SNAPSHOT",
  "SQLITE_BUSY_TIMEOUT",
  "SQLITE_LOCKED",
  "SQLITE_LOCKED_SHAREDCACHE",
  "SQLITE_CANTOPEN",
]);

/**
 * The single place better-sqlite3 errors become `ConnectError`s. The driver's
 * message is kept only as `cause`, since it can name schema internals.
 */
export function translateSqliteError(error: unknown): ConnectError {
  if (error instanceof ConnectError) {
    return error;
  }
  const code = errorCode(error);
  if (code === "SQLITE_CONSTRAINT_UNIQUE" && error instanceof Error) {
    for (const [index, reason, field] of UNIQUE_INDEX_REASONS) {
      if (error.message.includes(`'${index}'`)) {
        return alreadyExists(reason, `${field} is already taken`, { field }, error);
      }
    }
  }
  if (code === "SQLITE_CONSTRAINT_FOREIGNKEY") {
    // SQLite does not name the constraint. Today sessions.user_id and
    // chat_messages.sender_id have one: a row for a user that does not (or
    // no longer) exist.
    return failedPrecondition("a referenced record does not exist", error);
  }
  if (code !== undefined && UNAVAILABLE_CODES.has(code)) {
    return unavailable("database is busy", error);
  }
  // Anything else, including a clashing session id or refresh-token hash
  // (both random; a clash is a bug, not a client error), is Internal.
  return internal(error);
}

function errorCode(error: unknown): string | undefined {
  if (typeof error === "object" && error !== null && "code" in error) {
    return typeof error.code === "string" ? error.code : undefined;
  }
  return undefined;
}
