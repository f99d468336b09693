import { type Kysely, type Migration, sql } from "kysely";
import type { StoreKind } from "../store.js";

/**
 * Authentication: a `role` for every user (existing rows get 'user') and the
 * `sessions` table, one row per refresh token. Only the SHA-256 of a refresh
 * token is stored; the unique index on it is named `sessions_refresh_token_hash_key`.
 * Times are encoded like `users.create_time`: `timestamptz` on PostgreSQL,
 * integer Unix milliseconds on SQLite.
 */
export function authMigration(kind: StoreKind): Migration {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      const postgres = kind === "postgres";
      const time = postgres ? "timestamptz" : "integer";
      // SQLite accepts ADD COLUMN with NOT NULL only together with a
      // non-null default, which fills every existing row.
      await db.schema
        .alterTable("users")
        .addColumn("role", "text", (c) =>
          c.notNull().defaultTo("user").check(sql`role in ('user', 'admin')`),
        )
        .execute();
      await db.schema
        .createTable("sessions")
        .addColumn("id", "text", (c) => c.primaryKey())
        .addColumn("family_id", "text", (c) => c.notNull())
        .addColumn("user_id", "text", (c) => c.notNull().references("users.id").onDelete("cascade"))
        .addColumn("refresh_token_hash", "text", (c) => c.notNull())
        .addColumn("user_agent", "text", (c) => c.notNull())
        .addColumn("client_ip", "text", (c) => c.notNull())
        .addColumn("create_time", time, (c) => c.notNull())
        .addColumn("expire_time", time, (c) => c.notNull())
        .addColumn("revoke_time", time)
        // Not a foreign key: rotation marks the old row before inserting the
        // new one (see the store's rotateSession), in one transaction.
        .addColumn("replaced_by", "text")
        .addUniqueConstraint("sessions_refresh_token_hash_key", ["refresh_token_hash"])
        .$call((t) => (postgres ? t : t.modifyEnd(sql`strict`)))
        .execute();
      await db.schema
        .createIndex("sessions_family_id_idx")
        .on("sessions")
        .column("family_id")
        .execute();
      // Backs the foreign key (deleting a user) and per-user session lookups.
      await db.schema
        .createIndex("sessions_user_id_idx")
        .on("sessions")
        .column("user_id")
        .execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropTable("sessions").execute();
      await db.schema.alterTable("users").dropColumn("role").execute();
    },
  };
}
