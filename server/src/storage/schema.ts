import type { ColumnType } from "kysely";
import type { UserRole } from "./store.js";

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
  /** Added by `0002-auth`; defaults to 'user' (a CHECK allows only 'user' and 'admin'). */
  role: ColumnType<UserRole, UserRole | undefined, UserRole>;
}

/**
 * A time column: PostgreSQL `timestamptz` (a `Date`), SQLite integer Unix
 * milliseconds. The store encodes per dialect on write and normalises on read.
 */
type TimeColumn = ColumnType<Date | number, Date | number, Date | number>;

/**
 * The `sessions` table (migration `0002-auth`): one row per refresh token.
 * Rotation revokes a row and inserts its successor in the same family.
 */
export interface SessionsTable {
  id: string;
  /** Shared by every session descended from one login. */
  family_id: string;
  user_id: string;
  /** SHA-256 of the opaque refresh token, lower-case hex; unique. */
  refresh_token_hash: string;
  user_agent: string;
  client_ip: string;
  create_time: TimeColumn;
  expire_time: TimeColumn;
  revoke_time: ColumnType<Date | number | null, Date | number | null | undefined, Date | number>;
  /** Id of the session this one was rotated into; null unless rotated. */
  replaced_by: ColumnType<string | null, string | null | undefined, string>;
  /** The successor's refresh token, sealed (migration `0004-refresh-grace`); null unless rotated. */
  successor_token_box: ColumnType<string | null, string | null | undefined, string | null>;
}

/**
 * The `chat_messages` table (migration `0003-chat`): primary key (room, id),
 * unique (room, sender_id, client_msg_id).
 */
export interface ChatMessagesTable {
  room: string;
  /**
   * Position in the room, 1, 2, 3, …; written by the store as a subquery.
   * PostgreSQL `bigint` arrives as a string, SQLite gives a number.
   */
  id: ColumnType<number | string, number, never>;
  sender_id: string;
  /** The sender's username when the message was sent. */
  sender_username: string;
  text: string;
  /** The sender's idempotency key. */
  client_msg_id: string;
  create_time: ColumnType<Date | number, Date | number, never>;
}

/** Every table Switchboard stores; later migrations add to it. */
export interface Database {
  users: UsersTable;
  sessions: SessionsTable;
  chat_messages: ChatMessagesTable;
}
