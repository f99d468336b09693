import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { v7 as uuidv7 } from "uuid";
import type { Code as RpcCode } from "../../../gen/google/rpc/code_pb.js";
import { StatusSchema } from "../../../gen/google/rpc/status_pb.js";
import {
  type CreateUsersResponse_Failure,
  CreateUsersResponse_FailureSchema,
  type User,
  UserSchema,
  type UserService,
} from "../../../gen/switchboard/user/v1/user_pb.js";
import { type AuthInfo, kAuth } from "../context.js";
import { invalidArgument, notFound } from "../errors.js";
import type { WakeSignal } from "../events/wake-signal.js";
import type { NewUser, Store, UserRecord } from "../storage/store.js";
import * as rules from "../validation/user-rules.js";
import { violations } from "../validation/validate.js";

/** What the UserService needs; tests hand in real in-memory ones. */
export interface UserServiceDeps {
  readonly store: Store;
  /** Woken after every registration so WatchUsers streams look for new rows. */
  readonly userCreated: WakeSignal;
  /**
   * Told of every registration after `userCreated` is woken, e.g. to wake
   * the other instances' WatchUsers streams (events/user-created-feed.ts).
   */
  readonly announceUserCreated?: (record: UserRecord) => void;
  readonly logger: Logger;
  readonly hashPassword: (password: string) => Promise<string>;
  /** Lower-cased usernames that register as admins (configuration: ADMIN_USERNAMES). */
  readonly adminUsernames?: ReadonlySet<string>;
  readonly clock?: () => Date;
  readonly newId?: () => string;
}

/** Rows per store query while WatchUsers catches up. */
const WATCH_PAGE_SIZE = 100;
/** CreateUsers hashes this many requests ahead of the one being inserted. */
const IMPORT_WINDOW = 8;
/** Bounds of the CreateUsers summary (the counts stay exact). */
const MAX_REPORTED_USERS = 1000;
const MAX_REPORTED_FAILURES = 10_000;

/** Who may see a user's private fields (today: the email). */
export type UserAudience = "private" | "public";

/**
 * Converts a stored row to the API's User; the password hash stays behind,
 * and with the "public" audience so do the private fields (the email), which
 * only the user themself and admins may see (see {@link audienceFor}).
 */
export function toUser(record: UserRecord, audience: UserAudience): User {
  return create(UserSchema, {
    id: record.id,
    username: record.username,
    email: audience === "private" ? record.email : "",
    displayName: record.displayName,
    createTime: timestampFromDate(record.createTime),
  });
}

/** The audience `viewer` is for `userId`: private for the user themself and for admins. */
export function audienceFor(viewer: AuthInfo | undefined, userId: string): UserAudience {
  if (viewer === undefined) return "public";
  return viewer.userId === userId || viewer.roles.includes("admin") ? "private" : "public";
}

const CURSOR_PREFIX = "u1:";

/** Encodes a creation-order position as an opaque cursor. */
export function encodeCursor(seq: number): string {
  return Buffer.from(`${CURSOR_PREFIX}${seq}`).toString("base64url");
}

/** Decodes a cursor from `encodeCursor`; "" means the beginning. */
export function decodeCursor(cursor: string): number {
  if (cursor === "") return 0;
  const text = Buffer.from(cursor, "base64url").toString();
  const seq = text.startsWith(CURSOR_PREFIX)
    ? Number(text.slice(CURSOR_PREFIX.length))
    : Number.NaN;
  if (!Number.isSafeInteger(seq) || seq < 0) {
    throw invalidArgument([
      { field: "after_cursor", description: "is not a cursor this server issued" },
    ]);
  }
  return seq;
}

/** Builds the UserService implementation. */
export function createUserService(deps: UserServiceDeps): ServiceImpl<typeof UserService> {
  const { store, userCreated, logger } = deps;
  const clock = deps.clock ?? (() => new Date());
  const newId = deps.newId ?? uuidv7;

  const insert = async (
    fields: NewUserFields,
    passwordHash: string,
    signal: AbortSignal,
  ): Promise<UserRecord> => {
    signal.throwIfAborted();
    const user: NewUser = {
      id: newId(),
      username: fields.username,
      email: fields.email,
      displayName: fields.displayName,
      passwordHash,
      createTime: clock(),
      role: deps.adminUsernames?.has(fields.username.toLowerCase()) ? "admin" : "user",
    };
    const record = await store.createUser(user, { signal });
    userCreated.wake();
    deps.announceUserCreated?.(record);
    return record;
  };

  return {
    // Requests arrive validated (validation/validation-interceptor.ts).
    async registerUser(req, context) {
      const fields = req;
      const passwordHash = await deps.hashPassword(fields.password);
      const record = await insert(fields, passwordHash, context.signal);
      // The registrant typed the email in; it is theirs to see.
      return { user: toUser(record, "private") };
    },

    async getUser(req, context) {
      const { id } = req;
      const record = await store.getUser(id, { signal: context.signal });
      if (!record) throw notFound(`user "${id}"`);
      return { user: toUser(record, audienceFor(context.values.get(kAuth), record.id)) };
    },

    async *getUserStream(req, context) {
      const { ids } = req;
      const viewer = context.values.get(kAuth);
      for (const id of ids) {
        const record = await store.getUser(id, { signal: context.signal });
        yield record
          ? { id, result: { case: "user", value: toUser(record, audienceFor(viewer, record.id)) } }
          : {
              id,
              result: {
                case: "error",
                value: create(StatusSchema, {
                  code: Code.NotFound,
                  message: `user "${id}" not found`,
                }),
              },
            };
      }
    },

    async createUsers(requests, context) {
      let createdCount = 0;
      let failedCount = 0;
      const users: User[] = [];
      const failures: CreateUsersResponse_Failure[] = [];
      const fail = (index: number, username: string, err: unknown) => {
        const error = ConnectError.from(err);
        const unexpected = error.code === Code.Internal || error.code === Code.Unknown;
        if (unexpected) logger.error({ err, index }, "CreateUsers: item failed unexpectedly");
        failedCount++;
        if (failures.length < MAX_REPORTED_FAILURES) {
          failures.push(
            create(CreateUsersResponse_FailureSchema, {
              index,
              username,
              // google.rpc.Code and connect's Code share their numbering.
              code: (unexpected ? Code.Internal : error.code) as number as RpcCode,
              message: unexpected ? "internal error" : error.rawMessage,
            }),
          );
        }
      };

      // Hashing dominates the cost of an import, so a small window of items
      // is hashed ahead on the thread pool while rows are inserted strictly
      // in stream order (of two duplicates, the first one wins).
      interface Pending {
        readonly index: number;
        readonly req: NewUserFields;
        readonly hashed: Promise<string | ConnectError>;
      }
      const window: Pending[] = [];
      const settle = async ({ index, req, hashed }: Pending) => {
        const hash = await hashed;
        if (hash instanceof ConnectError) return fail(index, req.username, hash);
        try {
          const record = await insert(req, hash, context.signal);
          createdCount++;
          if (users.length < MAX_REPORTED_USERS) users.push(toUser(record, "private")); // admins only
        } catch (err) {
          context.signal.throwIfAborted();
          fail(index, req.username, err);
        }
      };

      let index = 0;
      for await (const req of requests) {
        const bad = violations(rules.newUser, req);
        const hashed =
          bad.length > 0
            ? Promise.resolve(invalidArgument(bad))
            : deps.hashPassword(req.password).catch((err: unknown) => ConnectError.from(err));
        window.push({ index: index++, req, hashed });
        if (window.length >= IMPORT_WINDOW) await settle(window.shift()!);
      }
      while (window.length > 0) await settle(window.shift()!);
      return { createdCount, failedCount, failures, users };
    },

    async *watchUsers(req, context) {
      let after = decodeCursor(req.afterCursor);
      const viewer = context.values.get(kAuth);
      for (;;) {
        const seen = userCreated.version;
        const page = await store.listUsersAfter(after, WATCH_PAGE_SIZE, { signal: context.signal });
        for (const record of page) {
          yield {
            user: toUser(record, audienceFor(viewer, record.id)),
            cursor: encodeCursor(record.seq),
          };
          after = record.seq;
        }
        if (page.length < WATCH_PAGE_SIZE) await userCreated.waitAfter(seen, context.signal);
      }
    },
  };
}

type NewUserFields = { username: string; email: string; password: string; displayName: string };
