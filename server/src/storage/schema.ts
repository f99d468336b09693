import type { ColumnType } from "kysely";

/**
 * Table types for Kysely, shared by both dialects. Where the drivers disagree
 * on a column's runtime type the union of both is declared, and the store's
 * row mapper normalises it (see `kysely-store.ts`).
 */

/** The `users` table (migration `0001-users`). */
export interface UsersTable {
  id: string;
  /**
   * Assigned by the database, never updated. PostgreSQL `bigint` arrives as a
   * string (node-postgres does not narrow int8); SQLite gives a number. Only
   * the SQLite adapter writes it (as a subquery), PostgreSQL uses an identity.
   */
  seq: ColumnType<number | string, number | undefined, never>;
  username: string;
  email: string;
  display_name: string;
  password_hash: string;
  /**
   * PostgreSQL `timestamptz` (a `Date` either way); SQLite integer Unix
   * milliseconds, so the round-trip is exact to the millisecond.
   */
  create_time: ColumnType<Date | number, Date | number, never>;
}

/** Every table Switchboard stores; later migrations add to it. */
export interface Database {
  users: UsersTable;
}
