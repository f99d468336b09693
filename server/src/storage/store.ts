/**
 * The storage contract every adapter implements (SQLite embedded, PostgreSQL).
 * One contract test suite (`store.contract.test.ts`) runs against each adapter.
 *
 * Adapters throw only `ConnectError`s: driver errors are translated in one
 * function per adapter (unique violation → AlreadyExists with an ErrorInfo
 * reason, connection failures → Unavailable), the original kept as `cause`.
 */

/** Roles a user can have; every user has exactly one. */
export type UserRole = "user" | "admin";

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
  /** 'user' unless promoted (see `setUserRole`). */
  readonly role: UserRole;
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
  /** Defaults to 'user'. */
  readonly role?: UserRole;
}

/**
 * A refresh-token session as stored. Rotation revokes a session and creates
 * its successor in the same family; a family is everything descended from one
 * login.
 */
export interface SessionRecord {
  /** Opaque id (UUIDv7), assigned by the service; the access token's `sid`. */
  readonly id: string;
  /** Shared by every session descended from one login. */
  readonly familyId: string;
  readonly userId: string;
  /** SHA-256 of the opaque refresh token (lower-case hex); the token itself is never stored. */
  readonly refreshTokenHash: string;
  readonly userAgent: string;
  readonly clientIp: string;
  readonly createTime: Date;
  readonly expireTime: Date;
  /** When it was revoked (rotated, logged out, or its family revoked); undefined while live. */
  readonly revokeTime: Date | undefined;
  /** The session it was rotated into; undefined unless rotated. */
  readonly replacedBy: string | undefined;
  /** What `rotateSession` was given as `successorTokenBox`; undefined unless rotated with one. */
  readonly successorTokenBox: string | undefined;
}

/** What the service hands to `createSession` and `rotateSession`. */
export interface NewSession {
  readonly id: string;
  readonly familyId: string;
  readonly userId: string;
  readonly refreshTokenHash: string;
  readonly userAgent: string;
  readonly clientIp: string;
  readonly createTime: Date;
  readonly expireTime: Date;
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

/** Options of `rotateSession`. */
export interface RotateOptions extends CallOptions {
  /**
   * Kept with the rotated session: the successor's refresh token, sealed so
   * that only the old token opens it (see auth/successor-box.ts).
   */
  readonly successorTokenBox?: string;
}

/** Which adapter is in use. */
export type StoreKind = "sqlite" | "postgres";

/** A stored chat message. */
export interface ChatMessageRecord {
  readonly room: string;
  /** Position in the room: 1, 2, 3, … with no gaps, assigned by the store. */
  readonly id: number;
  readonly senderId: string;
  readonly senderUsername: string;
  readonly text: string;
  /** The sender's idempotency key. */
  readonly clientMsgId: string;
  readonly createTime: Date;
}

/** What the chat service hands to `appendMessage`. */
export interface NewChatMessage {
  readonly room: string;
  readonly senderId: string;
  readonly senderUsername: string;
  readonly text: string;
  readonly clientMsgId: string;
  readonly createTime: Date;
}

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
  /** The largest `seq` of any user, 0 when there is none (a cheap "anything new?" check). */
  lastUserSeq(options?: CallOptions): Promise<number>;
  /**
   * Returns the user whose username OR email equals `login`
   * case-insensitively (SQL `lower()` on both sides, as the unique indexes
   * use), or undefined. Should both match different users (impossible with
   * today's rules: usernames cannot contain '@'), the username match wins.
   */
  findUserByLogin(login: string, options?: CallOptions): Promise<UserRecord | undefined>;
  /**
   * Gives `role` to the users with these usernames (case-insensitive).
   * Returns how many rows actually changed (users that already had the role
   * and unknown names are not counted). An empty list changes nothing.
   */
  setUserRole(usernames: readonly string[], role: UserRole, options?: CallOptions): Promise<number>;
  /**
   * Inserts a session. An unknown `userId` fails with FailedPrecondition; a
   * clashing id or token hash with Internal.
   */
  createSession(session: NewSession, options?: CallOptions): Promise<SessionRecord>;
  /** Returns the session with this refresh-token hash (live, revoked or expired), or undefined. */
  findSessionByTokenHash(hash: string, options?: CallOptions): Promise<SessionRecord | undefined>;
  /**
   * In one transaction: revokes session `oldId` (revoke time =
   * `next.createTime`, replaced by `next.id`) if it is not revoked yet, and
   * only then inserts `next` (which should carry the old session's family
   * and user). Returns false, changing nothing, when `oldId` was already
   * revoked or does not exist, so of two concurrent rotations of one session
   * exactly one returns true. Expiry is not checked here. The old session
   * keeps `options.successorTokenBox`.
   */
  rotateSession(oldId: string, next: NewSession, options?: RotateOptions): Promise<boolean>;
  /** Revokes one session if still live; returns how many were revoked (0 or 1). */
  revokeSession(id: string, revokeTime: Date, options?: CallOptions): Promise<number>;
  /** Revokes every still-live session of a family; returns how many were revoked. */
  revokeSessionFamily(familyId: string, revokeTime: Date, options?: CallOptions): Promise<number>;
  /**
   * Stores a chat message with the room's next id. Idempotent on
   * (room, senderId, clientMsgId): a repeat returns the stored message with
   * `created: false` and stores nothing. Ids are strictly increasing per room
   * and a message only becomes visible after every smaller id of its room
   * (adapters serialise appends per room), so readers following ids never
   * skip one.
   */
  appendMessage(
    message: NewChatMessage,
    options?: CallOptions,
  ): Promise<{ message: ChatMessageRecord; created: boolean }>;
  /** Up to `limit` messages of `room` with `id > afterId`, oldest first. */
  listMessagesAfter(
    room: string,
    afterId: number,
    limit: number,
    options?: CallOptions,
  ): Promise<ChatMessageRecord[]>;
  /**
   * Up to `limit` messages of `room` with `id < beforeId` (all ids when
   * `beforeId` is 0), the newest of them, returned oldest first.
   */
  listMessagesBefore(
    room: string,
    beforeId: number,
    limit: number,
    options?: CallOptions,
  ): Promise<ChatMessageRecord[]>;
  /** The id of the room's newest message, 0 when it has none. */
  lastMessageId(room: string, options?: CallOptions): Promise<number>;
  /** Checks the database answers (used by health checks); Unavailable if it does not. */
  ping(options?: CallOptions): Promise<void>;
  /** Releases connections. Idempotent; calls made afterwards reject with Unavailable. */
  close(): Promise<void>;
}
