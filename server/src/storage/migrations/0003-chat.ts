import { type Kysely, type Migration, sql } from "kysely";
import type { StoreKind } from "../store.js";

/**
 * Chat: `chat_messages`, one row per stored message. `id` is the message's
 * position in its room (1, 2, 3, … with no gaps), assigned by the store as
 * max(id) + 1 while it holds the room's append lock (see kysely-store.ts),
 * hence the primary key (room, id). The unique constraint
 * `chat_messages_client_msg_id_key` makes appends idempotent per sender.
 * `create_time` is encoded like the other tables: `timestamptz` on
 * PostgreSQL, integer Unix milliseconds on SQLite. `sender_username` is the
 * name at send time (a snapshot; renames do not rewrite history).
 */
export function chatMigration(kind: StoreKind): Migration {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      const postgres = kind === "postgres";
      await db.schema
        .createTable("chat_messages")
        .addColumn("room", "text", (c) => c.notNull())
        .addColumn("id", postgres ? "bigint" : "integer", (c) => c.notNull())
        // No cascade: deleting a user who has written messages fails rather
        // than silently rewriting room history (no user deletion exists yet).
        .addColumn("sender_id", "text", (c) => c.notNull().references("users.id"))
        .addColumn("sender_username", "text", (c) => c.notNull())
        .addColumn("text", "text", (c) => c.notNull())
        .addColumn("client_msg_id", "text", (c) => c.notNull())
        .addColumn("create_time", postgres ? "timestamptz" : "integer", (c) => c.notNull())
        .addPrimaryKeyConstraint("chat_messages_pkey", ["room", "id"])
        .addUniqueConstraint("chat_messages_client_msg_id_key", [
          "room",
          "sender_id",
          "client_msg_id",
        ])
        .$call((t) => (postgres ? t : t.modifyEnd(sql`strict`)))
        .execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.dropTable("chat_messages").execute();
    },
  };
}
