/**
 * The storage contract every adapter implements (SQLite embedded, PostgreSQL).
 * One contract test suite (`store.contract.test.ts`) runs against each adapter.
 *
 * Adapters throw only `ConnectError`s: driver errors are translated in one
 * function per adapter (unique violation → AlreadyExists with an ErrorInfo
 * reason, connection failures → Unavailable), the original kept as `cause`.
 */

/** A user row as stored. `passwordHash` never leaves the server. */
export interface UserRecord {
  /** Opaque id (UUIDv7), assigned by the service. */
  readonly id: string;
  readonly username: string;
  readonly email: string;
  readonly displayName: string;
  /** argon2id PHC string. */
  readonly passwordHash: string;
  readonly createTime: Date;
  /**
   * Position in creation order, assigned by the database: strictly increasing,
   * and a row only becomes visible after every row with a smaller `seq`
   * (adapters guarantee this so a live feed never skips a late commit).
   */
  readonly seq: number;
}

/** What the service hands to `createUser`. */
export interface NewUser {
  readonly id: string;
  readonly username: string;
  readonly email: string;
  readonly displayName: string;
  readonly passwordHash: string;
  readonly createTime: Date;
}

/** Options every storage call accepts. */
export interface CallOptions {
  /**
   * Aborts the call; adapters check it before doing work (not mid-query). An
   * aborted call rejects with the signal's reason if that is a
   * `ConnectError`, with DeadlineExceeded for a `TimeoutError`, and with
   * Canceled otherwise.
   */
  readonly signal?: AbortSignal;
}

/** Which adapter is in use. */
export type StoreKind = "sqlite" | "postgres";

/** Switchboard's persistent state. */
export interface Store {
  readonly kind: StoreKind;
  /**
   * Inserts a user. Usernames and emails are unique case-insensitively, which
   * the database enforces: a clash throws AlreadyExists with a
   * `google.rpc.ErrorInfo` whose reason is USERNAME_TAKEN or EMAIL_TAKEN.
   */
  createUser(user: NewUser, options?: CallOptions): Promise<UserRecord>;
  /** Returns the user with this id, or undefined (also for ids that are not UUIDs). */
  getUser(id: string, options?: CallOptions): Promise<UserRecord | undefined>;
  /**
   * Returns up to `limit` users with `seq > afterSeq`, in `seq` order. Both
   * arguments must be safe integers, `limit >= 0` (otherwise Internal).
   */
  listUsersAfter(afterSeq: number, limit: number, options?: CallOptions): Promise<UserRecord[]>;
  /** Checks the database answers (used by health checks); Unavailable if it does not. */
  ping(options?: CallOptions): Promise<void>;
  /** Releases connections. Idempotent; calls made afterwards reject with Unavailable. */
  close(): Promise<void>;
}
