import { type Kysely, type Migration, type MigrationProvider, Migrator } from "kysely";
import type { StoreLogger } from "../kysely-store.js";
import type { Database } from "../schema.js";
import type { StoreKind } from "../store.js";
import { usersMigration } from "./0001-users.js";
import { authMigration } from "./0002-auth.js";
import { chatMigration } from "./0003-chat.js";
import { refreshGraceMigration } from "./0004-refresh-grace.js";

/**
 * Every migration, in order. Listed in code rather than discovered on disk so
 * start-up behaves the same under tsx, compiled output and bundles. Append new
 * entries with the next number; never edit or reorder applied ones. Kysely
 * sorts by name, hence the zero-padded prefix.
 */
function migrations(kind: StoreKind): Record<string, Migration> {
  return {
    "0001-users": usersMigration(kind),
    "0002-auth": authMigration(kind),
    "0003-chat": chatMigration(kind),
    "0004-refresh-grace": refreshGraceMigration(),
  };
}

/** A Kysely migration provider for the given dialect. */
export function migrationProvider(kind: StoreKind): MigrationProvider {
  return { getMigrations: async () => migrations(kind) };
}

/** Options for {@link migrateToLatest}. */
export interface MigrateOptions {
  /**
   * Schema holding Kysely's bookkeeping tables. Required on PostgreSQL: left
   * unset, Kysely's existence check matches `kysely_migration` in *any* schema
   * of the database and then fails to find it on the search path.
   */
  readonly migrationTableSchema?: string;
  readonly logger?: StoreLogger;
}

/**
 * Applies pending migrations. Kysely runs them in one transaction and, on
 * PostgreSQL, under an advisory lock, so concurrent start-ups are safe. Throws
 * the raw driver error; the adapter translates it.
 */
export async function migrateToLatest(
  db: Kysely<Database>,
  kind: StoreKind,
  options: MigrateOptions = {},
): Promise<void> {
  const migrator = new Migrator({
    db,
    provider: migrationProvider(kind),
    ...(options.migrationTableSchema === undefined
      ? {}
      : { migrationTableSchema: options.migrationTableSchema }),
  });
  const { error, results } = await migrator.migrateToLatest();
  for (const result of results ?? []) {
    if (result.status === "Success") {
      options.logger?.info({ migration: result.migrationName, kind }, "storage migration applied");
    } else if (result.status === "Error") {
      options.logger?.warn({ migration: result.migrationName, kind }, "storage migration failed");
    }
  }
  if (error !== undefined) {
    throw error;
  }
}
