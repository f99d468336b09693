import type { StoreLogger } from "./kysely-store.js";
import type { Store } from "./store.js";

export type { StoreLogger } from "./kysely-store.js";
export type {
  CallOptions,
  ChatMessageRecord,
  NewChatMessage,
  NewSession,
  NewUser,
  RotateOptions,
  SessionRecord,
  Store,
  StoreKind,
  UserRecord,
  UserRole,
} from "./store.js";

/** Options for {@link openStore}. */
export interface OpenStoreOptions {
  /** Where the embedded SQLite database lives; unused with PostgreSQL. */
  readonly dataDir: string;
  /** PostgreSQL connection URL; when set (and non-empty) PostgreSQL is used instead of SQLite. */
  readonly databaseUrl?: string;
  readonly logger?: StoreLogger;
}

/**
 * Opens the configured store and migrates it to the latest schema. Only the
 * chosen adapter (and so only its driver) is loaded. Rejects with a
 * `ConnectError`: Unavailable when the database cannot be reached, Internal
 * otherwise.
 */
export async function openStore(options: OpenStoreOptions): Promise<Store> {
  // An empty DATABASE_URL in the environment means "not configured".
  if (options.databaseUrl) {
    const { openPostgresStore } = await import("./postgres-store.js");
    return openPostgresStore({
      databaseUrl: options.databaseUrl,
      ...(options.logger ? { logger: options.logger } : {}),
    });
  }
  const { openSqliteStore } = await import("./sqlite-store.js");
  return openSqliteStore({
    dataDir: options.dataDir,
    ...(options.logger ? { logger: options.logger } : {}),
  });
}
