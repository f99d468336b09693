import { type Kysely, type Migration, sql } from "kysely";
import type { StoreKind } from "../store.js";

/**
 * Creates `users`. Usernames and emails are unique case-insensitively through
 * expression indexes whose names the adapters' error translators recognise
 * (`users_username_key`, `users_email_key`), so keep them in step.
 */
export function usersMigration(kind: StoreKind): Migration {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      const postgres = kind === "postgres";
      await db.schema
        .createTable("users")
        .addColumn("id", "text", (c) => c.primaryKey())
        // PostgreSQL: identity values are handed out in insert order, and the
        // store serialises inserts so they also commit in that order (see
        // kysely-store.ts). SQLite: `id` is the primary key, so `seq` cannot be
        // the rowid alias; the store computes max(seq)+1 inside the insert
        // statement, which is race-free because SQLite takes the write lock
        // before reading.
        .addColumn("seq", postgres ? "bigint" : "integer", (c) =>
          postgres ? c.notNull().generatedAlwaysAsIdentity() : c.notNull(),
        )
        .addColumn("username", "text", (c) => c.notNull())
        .addColumn("email", "text", (c) => c.notNull())
        .addColumn("display_name", "text", (c) => c.notNull())
        .addColumn("password_hash", "text", (c) => c.notNull())
        // SQLite has no time type; integer milliseconds round-trip exactly.
        .addColumn("create_time", postgres ? "timestamptz" : "integer", (c) => c.notNull())
        .addUniqueConstraint("users_seq_key", ["seq"])
        // STRICT makes SQLite reject values of the wrong type instead of
        // silently storing them, which catches codec mistakes early.
        .$call((t) => (postgres ? t : t.modifyEnd(sql`strict`)))
        .execute();
      await db.schema
        .createIndex("users_username_key")
        .on("users")
        .unique()
        .expression(sql`lower(username)`)
        .execute();
      await db.schema
        .createIndex("users_email_key")
        .on("users")
        .unique()
        .expression(sql`lower(email)`)
        .execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropTable("users").execute();
    },
  };
}
