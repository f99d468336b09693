import { Code, ConnectError } from "@connectrpc/connect";
import { type CompiledQuery, type Kysely, type Selectable, sql } from "kysely";
import { internal, unavailable } from "../errors.js";
import type { ChatMessagesTable, Database, SessionsTable, UsersTable } from "./schema.js";
import type {
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

/**
 * The one query layer behind both adapters. Dialect differences are confined
 * to how `seq` is assigned and how times (`create_time`, the session times)
 * are encoded; everything else is the same Kysely query on either database.
 */

/** The logging surface storage needs; a pino logger satisfies it. */
export interface StoreLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Turns any error a driver (or Kysely) throws into a `ConnectError`. */
export type ErrorTranslator = (error: unknown) => ConnectError;

/** What an adapter hands to {@link createKyselyStore}. */
export interface KyselyStoreConfig {
  readonly kind: StoreKind;
  /** Already migrated; the store owns it from now on and destroys it on close. */
  readonly db: Kysely<Database>;
  readonly translateError: ErrorTranslator;
}

/**
 * Key of the transaction-scoped advisory lock that serialises user inserts on
 * PostgreSQL. Any constant works as long as nothing else in the database uses
 * it; it is below 2^53 so it survives as a JS number literal.
 */
const USER_INSERT_LOCK_KEY = 0x5342_5553_4552;

/**
 * First key of the two-key, transaction-scoped advisory lock that serialises
 * chat appends per room on PostgreSQL; the second key is `hashtext(room)`.
 * PostgreSQL keeps the one-bigint and the two-int4 key spaces apart, so this
 * never meets {@link USER_INSERT_LOCK_KEY}. Two rooms whose names hash alike
 * merely share a lock (their appends serialise; nothing breaks). ASCII "SBCH",
 * below 2^31 so it is a valid int4.
 */
const CHAT_APPEND_LOCK_CLASS = 0x5342_4348;

const CHAT_COLUMNS = [
  "room",
  "id",
  "sender_id",
  "sender_username",
  "text",
  "client_msg_id",
  "create_time",
] as const;

type ChatRow = Pick<Selectable<ChatMessagesTable>, (typeof CHAT_COLUMNS)[number]>;

const USER_COLUMNS = [
  "id",
  "seq",
  "username",
  "email",
  "display_name",
  "password_hash",
  "create_time",
  "role",
] as const;

type UserRow = Pick<Selectable<UsersTable>, (typeof USER_COLUMNS)[number]>;

const SESSION_COLUMNS = [
  "id",
  "family_id",
  "user_id",
  "refresh_token_hash",
  "user_agent",
  "client_ip",
  "create_time",
  "expire_time",
  "revoke_time",
  "replaced_by",
  "successor_token_box",
] as const;

type SessionRow = Pick<Selectable<SessionsTable>, (typeof SESSION_COLUMNS)[number]>;

/**
 * Throws if the call was aborted, as a `ConnectError` so callers see one error
 * type: a `ConnectError` reason (what Connect handler signals carry) is thrown
 * unchanged, a `TimeoutError` (e.g. `AbortSignal.timeout`) becomes
 * DeadlineExceeded, anything else Canceled. `ConnectError.from` is not used
 * because it maps timeouts to Canceled.
 */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal === undefined || !signal.aborted) {
    return;
  }
  const reason: unknown = signal.reason;
  if (reason instanceof ConnectError) {
    throw reason;
  }
  if (reason instanceof Error && reason.name === "TimeoutError") {
    throw new ConnectError(
      "storage call timed out",
      Code.DeadlineExceeded,
      undefined,
      undefined,
      reason,
    );
  }
  throw new ConnectError("storage call canceled", Code.Canceled, undefined, undefined, reason);
}

/** Builds a {@link Store} over a migrated Kysely instance. */
export function createKyselyStore(config: KyselyStoreConfig): Store {
  return new KyselyStore(config);
}

class KyselyStore implements Store {
  readonly kind: StoreKind;
  readonly #db: Kysely<Database>;
  readonly #translate: ErrorTranslator;
  /**
   * GetUser's query, built and compiled once: it is the hottest read (every
   * GetUser, every id of GetUserStream), and building plus compiling it
   * through Kysely's operation-node tree cost more CPU than running it. Each
   * call only swaps in its parameter.
   */
  readonly #getUserQuery: CompiledQuery<UserRow>;
  #closing: Promise<void> | undefined;

  constructor(config: KyselyStoreConfig) {
    this.kind = config.kind;
    this.#db = config.db;
    this.#translate = config.translateError;
    this.#getUserQuery = this.#db
      .selectFrom("users")
      .select(USER_COLUMNS)
      .where("id", "=", "")
      .compile();
  }

  createUser(user: NewUser, options?: CallOptions): Promise<UserRecord> {
    return this.#run(options, async () => {
      const row =
        this.kind === "postgres"
          ? await this.#insertPostgres(user)
          : await this.#insertSqlite(user);
      return toRecord(row);
    });
  }

  getUser(id: string, options?: CallOptions): Promise<UserRecord | undefined> {
    return this.#run(options, async () => {
      const { rows } = await this.#db.executeQuery<UserRow>({
        ...this.#getUserQuery,
        parameters: [id],
      });
      const row = rows[0];
      return row === undefined ? undefined : toRecord(row);
    });
  }

  listUsersAfter(afterSeq: number, limit: number, options?: CallOptions): Promise<UserRecord[]> {
    return this.#run(options, async () => {
      if (isEmptyPage("listUsersAfter", afterSeq, limit)) return [];
      const rows = await this.#db
        .selectFrom("users")
        .select(USER_COLUMNS)
        .where("seq", ">", afterSeq)
        .orderBy("seq")
        .limit(limit)
        .execute();
      return rows.map(toRecord);
    });
  }

  lastUserSeq(options?: CallOptions): Promise<number> {
    return this.#run(options, async () => {
      const row = await this.#db
        .selectFrom("users")
        .select((eb) => eb.fn.max("seq").as("last"))
        .executeTakeFirst();
      return row?.last == null ? 0 : toSeq(row.last);
    });
  }

  findUserByLogin(login: string, options?: CallOptions): Promise<UserRecord | undefined> {
    return this.#run(options, async () => {
      // lower() on both sides, exactly like the unique indexes, so matching
      // and uniqueness agree (and the expression indexes serve the lookup).
      const row = await this.#db
        .selectFrom("users")
        .select(USER_COLUMNS)
        .where((eb) =>
          eb.or([
            eb(sql`lower(username)`, "=", sql`lower(${login})`),
            eb(sql`lower(email)`, "=", sql`lower(${login})`),
          ]),
        )
        .orderBy(sql`case when lower(username) = lower(${login}) then 0 else 1 end`)
        .limit(1)
        .executeTakeFirst();
      return row === undefined ? undefined : toRecord(row);
    });
  }

  setUserRole(
    usernames: readonly string[],
    role: UserRole,
    options?: CallOptions,
  ): Promise<number> {
    return this.#run(options, async () => {
      if (usernames.length === 0) {
        return 0;
      }
      const result = await this.#db
        .updateTable("users")
        .set({ role })
        .where(
          sql`lower(username)`,
          "in",
          usernames.map((u) => sql<string>`lower(${u})`),
        )
        .where("role", "<>", role)
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    });
  }

  createSession(session: NewSession, options?: CallOptions): Promise<SessionRecord> {
    return this.#run(options, async () => {
      const row = await this.#db
        .insertInto("sessions")
        .values(this.#sessionValues(session))
        .returning(SESSION_COLUMNS)
        .executeTakeFirstOrThrow();
      return toSessionRecord(row);
    });
  }

  findSessionByTokenHash(hash: string, options?: CallOptions): Promise<SessionRecord | undefined> {
    return this.#run(options, async () => {
      const row = await this.#db
        .selectFrom("sessions")
        .select(SESSION_COLUMNS)
        .where("refresh_token_hash", "=", hash)
        .executeTakeFirst();
      return row === undefined ? undefined : toSessionRecord(row);
    });
  }

  /**
   * The conditional update is what makes rotation happen once: on
   * PostgreSQL a second concurrent transaction blocks on the row lock and,
   * once the first commits, re-checks `revoke_time is null` and updates
   * nothing; SQLite runs write transactions one at a time. The insert only
   * follows a won update, inside the same transaction.
   */
  rotateSession(oldId: string, next: NewSession, options?: RotateOptions): Promise<boolean> {
    return this.#run(options, () =>
      this.#db.transaction().execute(async (trx) => {
        const revoked = await trx
          .updateTable("sessions")
          .set({
            revoke_time: this.#time(next.createTime),
            replaced_by: next.id,
            successor_token_box: options?.successorTokenBox ?? null,
          })
          .where("id", "=", oldId)
          .where("revoke_time", "is", null)
          .executeTakeFirst();
        if (Number(revoked.numUpdatedRows) !== 1) {
          return false;
        }
        await trx.insertInto("sessions").values(this.#sessionValues(next)).execute();
        return true;
      }),
    );
  }

  revokeSession(id: string, revokeTime: Date, options?: CallOptions): Promise<number> {
    return this.#run(options, async () => {
      const result = await this.#db
        .updateTable("sessions")
        .set({ revoke_time: this.#time(revokeTime) })
        .where("id", "=", id)
        .where("revoke_time", "is", null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    });
  }

  revokeSessionFamily(familyId: string, revokeTime: Date, options?: CallOptions): Promise<number> {
    return this.#run(options, async () => {
      const result = await this.#db
        .updateTable("sessions")
        .set({ revoke_time: this.#time(revokeTime) })
        .where("family_id", "=", familyId)
        .where("revoke_time", "is", null)
        .executeTakeFirst();
      return Number(result.numUpdatedRows);
    });
  }

  /**
   * One transaction either way. SQLite: the insert is the transaction's
   * first statement, so it takes the (single) write lock before its
   * subquery reads max(id); a clash on the idempotency key inserts nothing
   * (`on conflict do nothing`) and the stored row is read back in the same
   * transaction. PostgreSQL: the room's advisory lock is taken first and held
   * until commit, so appends to one room read max(id), insert and become
   * visible one at a time, in id order (readers are never blocked); the
   * idempotency lookup runs under the same lock, so a repeat waits for the
   * original and then finds it. Should an insert still lose a race on the
   * idempotency key (a writer not taking the lock), the failed append reads
   * the stored message back instead of failing.
   */
  appendMessage(
    message: NewChatMessage,
    options?: CallOptions,
  ): Promise<{ message: ChatMessageRecord; created: boolean }> {
    return this.#run(options, async () => {
      try {
        return await this.#db.transaction().execute(async (trx) => {
          if (this.kind === "postgres") {
            await sql`select pg_advisory_xact_lock(${sql.lit(CHAT_APPEND_LOCK_CLASS)}, hashtext(${message.room}))`.execute(
              trx,
            );
            const existing = await findMessageByKey(trx, message);
            if (existing !== undefined) {
              return { message: toChatRecord(existing), created: false };
            }
          }
          const inserted = await trx
            .insertInto("chat_messages")
            .values({
              room: message.room,
              id: sql<number>`(select coalesce(max(id), 0) + 1 from chat_messages where room = ${message.room})`,
              sender_id: message.senderId,
              sender_username: message.senderUsername,
              text: message.text,
              client_msg_id: message.clientMsgId,
              create_time: this.#time(message.createTime),
            })
            .onConflict((oc) => oc.columns(["room", "sender_id", "client_msg_id"]).doNothing())
            .returning(CHAT_COLUMNS)
            .executeTakeFirst();
          if (inserted !== undefined) {
            return { message: toChatRecord(inserted), created: true };
          }
          const stored = await findMessageByKey(trx, message);
          if (stored === undefined) {
            throw new Error("chat append conflicted but no message has its idempotency key");
          }
          return { message: toChatRecord(stored), created: false };
        });
      } catch (error) {
        // A lost race on the idempotency key: the winner's row is the answer.
        // Anything else (unknown sender, database down) is rethrown as is.
        const stored = await findMessageByKey(this.#db, message).catch(() => undefined);
        if (stored === undefined) {
          throw error;
        }
        return { message: toChatRecord(stored), created: false };
      }
    });
  }

  listMessagesAfter(
    room: string,
    afterId: number,
    limit: number,
    options?: CallOptions,
  ): Promise<ChatMessageRecord[]> {
    return this.#run(options, async () => {
      if (isEmptyPage("listMessagesAfter", afterId, limit)) return [];
      const rows = await this.#db
        .selectFrom("chat_messages")
        .select(CHAT_COLUMNS)
        .where("room", "=", room)
        .where("id", ">", afterId)
        .orderBy("id")
        .limit(limit)
        .execute();
      return rows.map(toChatRecord);
    });
  }

  listMessagesBefore(
    room: string,
    beforeId: number,
    limit: number,
    options?: CallOptions,
  ): Promise<ChatMessageRecord[]> {
    return this.#run(options, async () => {
      if (isEmptyPage("listMessagesBefore", beforeId, limit, 0)) return [];
      const rows = await this.#db
        .selectFrom("chat_messages")
        .select(CHAT_COLUMNS)
        .where("room", "=", room)
        .$if(beforeId > 0, (q) => q.where("id", "<", beforeId))
        .orderBy("id", "desc")
        .limit(limit)
        .execute();
      return rows.reverse().map(toChatRecord);
    });
  }

  lastMessageId(room: string, options?: CallOptions): Promise<number> {
    return this.#run(options, async () => {
      const row = await this.#db
        .selectFrom("chat_messages")
        .select((eb) => eb.fn.max("id").as("last"))
        .where("room", "=", room)
        .executeTakeFirst();
      return row?.last == null ? 0 : toSeq(row.last);
    });
  }

  ping(options?: CallOptions): Promise<void> {
    return this.#run(options, async () => {
      await sql`select 1`.execute(this.#db);
    });
  }

  close(): Promise<void> {
    this.#closing ??= this.#db.destroy().catch((error: unknown) => {
      throw this.#translate(error);
    });
    return this.#closing;
  }

  /**
   * SQLite has a single writer and the statement takes the write lock before
   * it reads max(seq), so computing the next seq inside the insert is both
   * race-free and commit-ordered.
   */
  async #insertSqlite(user: NewUser): Promise<UserRow> {
    return this.#db
      .insertInto("users")
      .values({
        ...userValues(user),
        seq: sql<number>`(select coalesce(max(seq), 0) + 1 from users)`,
        create_time: user.createTime.getTime(),
      })
      .returning(USER_COLUMNS)
      .executeTakeFirstOrThrow();
  }

  /**
   * An identity column alone is not enough on PostgreSQL: two concurrent
   * inserts take seq 7 and 8 in that order but may commit as 8 then 7, and a
   * live feed that already read up to 8 would never see 7. Holding a
   * transaction-scoped advisory lock across insert and commit makes inserts
   * take seq values and become visible one at a time, in order (the lock is
   * released only after the commit is visible). Registration is rare, so the
   * serialisation costs nothing that matters; readers are never blocked.
   */
  async #insertPostgres(user: NewUser): Promise<UserRow> {
    return this.#db.transaction().execute(async (trx) => {
      await sql`select pg_advisory_xact_lock(${sql.lit(USER_INSERT_LOCK_KEY)})`.execute(trx);
      return trx
        .insertInto("users")
        .values({ ...userValues(user), create_time: user.createTime })
        .returning(USER_COLUMNS)
        .executeTakeFirstOrThrow();
    });
  }

  /** A time as this dialect stores it (see schema.ts). */
  #time(date: Date): Date | number {
    return this.kind === "postgres" ? date : date.getTime();
  }

  #sessionValues(session: NewSession) {
    return {
      id: session.id,
      family_id: session.familyId,
      user_id: session.userId,
      refresh_token_hash: session.refreshTokenHash,
      user_agent: session.userAgent,
      client_ip: session.clientIp,
      create_time: this.#time(session.createTime),
      expire_time: this.#time(session.expireTime),
    };
  }

  /** The wrapper every call goes through: abort check, closed check, error translation. */
  async #run<T>(options: CallOptions | undefined, work: () => Promise<T>): Promise<T> {
    throwIfAborted(options?.signal);
    if (this.#closing !== undefined) {
      throw unavailable("storage is closed");
    }
    try {
      return await work();
    } catch (error) {
      throw this.#translate(error);
    }
  }
}

function userValues(user: NewUser) {
  return {
    id: user.id,
    username: user.username,
    email: user.email,
    display_name: user.displayName,
    password_hash: user.passwordHash,
    role: user.role ?? "user",
  };
}

/**
 * Checks a page request (a cursor and a limit) — a bad one is a caller's bug,
 * a RangeError — and says whether it asks for nothing (limit 0).
 */
function isEmptyPage(
  method: string,
  cursor: number,
  limit: number,
  minCursor = Number.MIN_SAFE_INTEGER,
): boolean {
  if (
    !Number.isSafeInteger(cursor) ||
    cursor < minCursor ||
    !Number.isSafeInteger(limit) ||
    limit < 0
  ) {
    throw new RangeError(
      `${method}(${cursor}, ${limit}): expected safe integers (cursor ≥ ${minCursor}, limit ≥ 0)`,
    );
  }
  return limit === 0;
}

function toRecord(row: UserRow): UserRecord {
  return {
    id: row.id,
    username: row.username,
    email: row.email,
    displayName: row.display_name,
    passwordHash: row.password_hash,
    createTime: toDate(row.create_time),
    role: toRole(row.role),
    seq: toSeq(row.seq),
  };
}

function toSessionRecord(row: SessionRow): SessionRecord {
  return {
    id: row.id,
    familyId: row.family_id,
    userId: row.user_id,
    refreshTokenHash: row.refresh_token_hash,
    userAgent: row.user_agent,
    clientIp: row.client_ip,
    createTime: toDate(row.create_time),
    expireTime: toDate(row.expire_time),
    revokeTime: row.revoke_time === null ? undefined : toDate(row.revoke_time),
    replacedBy: row.replaced_by ?? undefined,
    successorTokenBox: row.successor_token_box ?? undefined,
  };
}

/** The stored message with `message`'s idempotency key, if any. */
function findMessageByKey(
  db: Kysely<Database>,
  message: NewChatMessage,
): Promise<ChatRow | undefined> {
  return db
    .selectFrom("chat_messages")
    .select(CHAT_COLUMNS)
    .where("room", "=", message.room)
    .where("sender_id", "=", message.senderId)
    .where("client_msg_id", "=", message.clientMsgId)
    .executeTakeFirst();
}

function toChatRecord(row: ChatRow): ChatMessageRecord {
  return {
    room: row.room,
    id: toSeq(row.id),
    senderId: row.sender_id,
    senderUsername: row.sender_username,
    text: row.text,
    clientMsgId: row.client_msg_id,
    createTime: toDate(row.create_time),
  };
}

function toRole(value: string): UserRole {
  if (value !== "user" && value !== "admin") {
    throw internal(new RangeError(`unknown role ${JSON.stringify(value)}`));
  }
  return value;
}

function toDate(value: Date | number): Date {
  // A fresh Date either way, so callers cannot mutate anything shared.
  return new Date(value instanceof Date ? value.getTime() : value);
}

function toSeq(value: number | string): number {
  const seq = Number(value);
  if (!Number.isSafeInteger(seq)) {
    throw internal(new RangeError(`seq ${String(value)} is not a safe integer`));
  }
  return seq;
}
