import { ConnectError } from "@connectrpc/connect";
import { Kysely, PostgresDialect, sql } from "kysely";
import pg from "pg";
import { alreadyExists, failedPrecondition, internal, Reason, unavailable } from "../errors.js";
import { createKyselyStore, type StoreLogger } from "./kysely-store.js";
import { migrateToLatest } from "./migrations/index.js";
import type { Database } from "./schema.js";
import type { Store } from "./store.js";

/** Options for {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /**
   * A libpq-style URL. Tables live in the first schema of the connection's
   * search path, so `?options=-c%20search_path%3Dname` selects another one.
   */
  readonly databaseUrl: string;
  readonly logger?: StoreLogger;
  /** Overrides of the pool defaults below (tests shorten timeouts). */
  readonly pool?: Omit<pg.PoolConfig, "connectionString">;
}

/** Opens a pool, checks the database answers, and applies pending migrations. */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<Store> {
  const pool = new pg.Pool({
    max: 10,
    // Without a bound, a connect to a host that drops packets hangs forever.
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: 30_000,
    application_name: "switchboard",
    ...options.pool,
    connectionString: options.databaseUrl,
  });
  // An idle client dying (server restart, network cut) is emitted on the pool;
  // unhandled, that event would crash the process. The next query reconnects.
  pool.on("error", (error) => {
    options.logger?.warn({ err: error, kind: "postgres" }, "idle PostgreSQL connection failed");
  });
  // The pool listens to a client only while it is idle: one that is checked
  // out (a query in flight) when its connection drops emits 'error' on
  // itself, which would crash the process too. The query already fails
  // (translated to Unavailable) and the pool discards the broken client on
  // release, so this listener only has to log.
  pool.on("connect", (client) => {
    client.on("error", (error) => {
      options.logger?.warn(
        { err: error, kind: "postgres" },
        "PostgreSQL connection failed while in use",
      );
    });
  });
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    const { rows } = await sql<{
      schema: string | null;
    }>`select current_schema() as schema`.execute(db);
    const schema = rows[0]?.schema;
    if (schema == null) {
      throw new Error("the search_path names no existing schema");
    }
    await migrateToLatest(db, "postgres", {
      migrationTableSchema: schema,
      ...(options.logger ? { logger: options.logger } : {}),
    });
    options.logger?.info({ kind: "postgres", schema }, "storage opened");
  } catch (error) {
    await db.destroy().catch(() => undefined);
    throw translatePostgresError(error);
  }
  return createKyselyStore({ kind: "postgres", db, translateError: translatePostgresError });
}

/**
 * The RetryInfo delay of Unavailable: a restarted server or a replaced
 * connection usually answers again within about a second.
 */
const RETRY_AFTER_MS = 1000;

/** Unique indexes whose violations mean a taken username or email. */
const UNIQUE_CONSTRAINT_REASONS: ReadonlyMap<string, readonly [Reason, string]> = new Map([
  ["users_username_key", [Reason.USERNAME_TAKEN, "username"]],
  ["users_email_key", [Reason.EMAIL_TAKEN, "email"]],
]);

/**
 * SQLSTATEs meaning the server cannot serve us right now: too many clients or
 * other resource exhaustion, shutting down or starting up.
 */
const UNAVAILABLE_SQLSTATES = new Set([
  "53000",
  "53100",
  "53200",
  "53300",
  "57P01",
  "57P02",
  "57P03",
]);

/** Socket-level failures reaching the server. */
const UNAVAILABLE_NODE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
]);

/**
 * node-postgres reports lost or failed connections only by message (no code).
 * Matched case-insensitively against the start of these texts.
 */
const UNAVAILABLE_MESSAGES = [
  "connection terminated",
  "timeout exceeded when trying to connect",
  "client has encountered a connection error",
  "connection ended unexpectedly",
];

/**
 * The single place node-postgres errors become `ConnectError`s. The driver's
 * message is kept only as `cause`, since it can name schema internals or
 * echo the offending values.
 */
export function translatePostgresError(error: unknown): ConnectError {
  if (error instanceof ConnectError) {
    return error;
  }
  const { code, constraint } = fields(error);
  if (code === "23505") {
    const match = constraint === undefined ? undefined : UNIQUE_CONSTRAINT_REASONS.get(constraint);
    if (match !== undefined) {
      const [reason, field] = match;
      return alreadyExists(reason, `${field} is already taken`, { field }, error);
    }
    // Other unique violations (a clashing session id or refresh-token hash,
    // both random) are bugs, not client errors.
    return internal(error);
  }
  if (code === "23503") {
    // Foreign-key violation, e.g. a session for a user that no longer exists.
    return failedPrecondition("a referenced record does not exist", error);
  }
  if (isUnavailable(error)) {
    return unavailable("database is unavailable", error, RETRY_AFTER_MS);
  }
  return internal(error);
}

function isUnavailable(error: unknown): boolean {
  const { code } = fields(error);
  if (code !== undefined) {
    // Class 08: connection exceptions.
    if (
      code.startsWith("08") ||
      UNAVAILABLE_SQLSTATES.has(code) ||
      UNAVAILABLE_NODE_CODES.has(code)
    ) {
      return true;
    }
  }
  if (error instanceof AggregateError && error.errors.some(isUnavailable)) {
    // Node's happy-eyeballs connect reports one error per address tried.
    return true;
  }
  if (error instanceof Error) {
    const message = error.message.toLowerCase();
    if (UNAVAILABLE_MESSAGES.some((m) => message.startsWith(m))) {
      return true;
    }
    return error.cause !== undefined && error.cause !== error && isUnavailable(error.cause);
  }
  return false;
}

function fields(error: unknown): { code?: string; constraint?: string } {
  if (typeof error !== "object" || error === null) {
    return {};
  }
  const out: { code?: string; constraint?: string } = {};
  if ("code" in error && typeof error.code === "string") {
    out.code = error.code;
  }
  if ("constraint" in error && typeof error.constraint === "string") {
    out.constraint = error.constraint;
  }
  return out;
}
