import type { Kysely, Migration } from "kysely";

/**
 * Retry-safe refresh: `sessions.successor_token_box`, the successor's refresh
 * token sealed under a key derived from the rotated (old) token, so a client
 * that retries a refresh whose answer it lost can be given the same successor
 * (auth/successor-box.ts). Null unless the session was rotated.
 */
export function refreshGraceMigration(): Migration {
  return {
    async up(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("sessions").addColumn("successor_token_box", "text").execute();
    },
    async down(db: Kysely<unknown>): Promise<void> {
      await db.schema.alterTable("sessions").dropColumn("successor_token_box").execute();
    },
  };
}
