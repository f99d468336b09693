import { fromBinary } from "@bufbuild/protobuf";
import { anyIs, anyUnpack } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { type Status, StatusSchema } from "../gen/google/rpc/status_pb.js";
import { ADMIN_USERNAME, registerAndLogin } from "./support/auth.js";
import { loadProtoPackage } from "./support/grpc-js-proto.js";
import { startTestServer, type TestServer } from "./support/server.js";

/** A grpc-js client interceptor that sends `authorization: Bearer <token>` on every call. */
function bearerMetadata(token: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/**
 * @grpc/grpc-js with @grpc/proto-loader as an independent gRPC
 * implementation, over h2c to the same port that serves Connect and
 * gRPC-Web. Messages use proto-loader's camelCase names (keepCase: false).
 */

const PASSWORD = "correct horse battery";

interface Timestamp {
  seconds: string;
  nanos: number;
}

interface User {
  id: string;
  username: string;
  email: string;
  displayName: string;
  createTime: Timestamp | null;
}

interface NewUser {
  username: string;
  email: string;
  password: string;
  displayName?: string;
}

interface StreamItem {
  id: string;
  result: "user" | "error";
  user?: User | null;
  error?: { code: number; message: string; details: unknown[] } | null;
}

interface Summary {
  createdCount: number;
  failedCount: number;
  failures: Array<{ index: number; username: string; code: string; message: string }>;
  users: User[];
}

interface WatchItem {
  user: User;
  cursor: string;
}

type Callback<T> = (err: grpc.ServiceError | null, value?: T) => void;

/** The dynamically loaded client, typed by hand from user.proto. */
interface UserServiceClient extends grpc.Client {
  RegisterUser(
    req: NewUser,
    options: grpc.CallOptions,
    cb: Callback<{ user: User }>,
  ): grpc.ClientUnaryCall;
  GetUser(req: { id: string }, options: grpc.CallOptions, cb: Callback<{ user: User }>): void;
  GetUserStream(
    req: { ids: string[] },
    options: grpc.CallOptions,
  ): grpc.ClientReadableStream<StreamItem>;
  CreateUsers(options: grpc.CallOptions, cb: Callback<Summary>): grpc.ClientWritableStream<NewUser>;
  WatchUsers(
    req: { afterCursor: string },
    options: grpc.CallOptions,
  ): grpc.ClientReadableStream<WatchItem>;
}

type UserServiceConstructor = new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ClientOptions,
) => UserServiceClient;

function loadClientConstructor(): UserServiceConstructor {
  const root = loadProtoPackage("switchboard/user/v1/user.proto") as unknown as {
    switchboard: { user: { v1: { UserService: UserServiceConstructor } } };
  };
  return root.switchboard.user.v1.UserService;
}

/** Every call gets a deadline, so no test can hang on the network. */
const within = (ms = 10_000): grpc.CallOptions => ({ deadline: Date.now() + ms });

/** Resolves with the error a call failed with; fails the test if it succeeded. */
async function failure(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    const value = await promise;
    throw new Error(`expected the call to fail, got ${JSON.stringify(value)}`);
  } catch (err) {
    if (!(err instanceof Error) || !("code" in err) || !("metadata" in err)) throw err;
    return err as grpc.ServiceError;
  }
}

/** Reads a server stream to its end. */
function readAll<T>(stream: grpc.ClientReadableStream<T>): Promise<T[]> {
  return new Promise((resolve, reject) => {
    const items: T[] = [];
    stream.on("data", (item: T) => items.push(item));
    stream.on("error", reject);
    stream.on("end", () => resolve(items));
  });
}

/** The google.rpc.Status the server put in the `grpc-status-details-bin` trailer. */
function richStatus(err: grpc.ServiceError): Status {
  const [bin] = err.metadata.get("grpc-status-details-bin");
  expect(bin, "grpc-status-details-bin trailer").toBeInstanceOf(Buffer);
  const status = fromBinary(StatusSchema, bin as Buffer);
  expect(status.code).toBe(err.code);
  // connect-es percent-encodes grpc-message with encodeURIComponent; grpc-js
  // decodes it with decodeURI, which leaves %3A, %3B, %2C... in err.details.
  expect(decodeURIComponent(err.details)).toBe(status.message);
  return status;
}

function expectTimestamp(ts: Timestamp | null) {
  expect(ts).not.toBeNull();
  const millis = Number(ts!.seconds) * 1000 + ts!.nanos / 1e6;
  expect(Math.abs(Date.now() - millis)).toBeLessThan(5 * 60_000);
}

/**
 * A WatchUsers call whose items are collected as they arrive; `waitFor`
 * is bounded and `cancel` resolves with the status the client ends with.
 */
function watch(client: UserServiceClient, afterCursor: string) {
  const call = client.WatchUsers({ afterCursor }, within(20_000));
  const items: WatchItem[] = [];
  let ended: grpc.ServiceError | Error | undefined;
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const listener of listeners) listener();
  };
  const finished = new Promise<grpc.ServiceError | Error>((resolve) => {
    call.on("error", (err) => {
      ended = err;
      resolve(err);
      notify();
    });
    call.on("end", () => {
      ended ??= new Error("stream ended");
      resolve(ended);
      notify();
    });
  });
  call.on("data", (item: WatchItem) => {
    items.push(item);
    notify();
  });
  return {
    call,
    waitFor(count: number, timeoutMs = 10_000): Promise<WatchItem[]> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (items.length >= count) {
            done();
            resolve([...items]);
          } else if (ended) {
            done();
            reject(new Error(`WatchUsers ended after ${items.length} items: ${ended.message}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`waited ${timeoutMs} ms for ${count} items, got ${items.length}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    /** Cancels the call and resolves with how it ended on the client (bounded). */
    async cancel(): Promise<grpc.ServiceError | Error> {
      call.cancel();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<Error>((resolve) => {
        timer = setTimeout(() => resolve(new Error("no status 5 s after cancel")), 5_000);
      });
      const result = await Promise.race([finished, timeout]);
      clearTimeout(timer);
      return result;
    },
  };
}

describe("@grpc/grpc-js client over h2c on the shared port", () => {
  let server: TestServer;
  let client: UserServiceClient;
  /** Every user the tests created, in creation order (tests run one at a time). */
  const created: User[] = [];

  function registerUser(req: NewUser): Promise<User> {
    return new Promise((resolve, reject) => {
      client.RegisterUser(req, within(), (err, res) => {
        if (err) return reject(err);
        created.push(res!.user);
        resolve(res!.user);
      });
    });
  }

  function getUser(id: string): Promise<User> {
    return new Promise((resolve, reject) => {
      client.GetUser({ id }, within(), (err, res) => (err ? reject(err) : resolve(res!.user)));
    });
  }

  function createUsers(requests: NewUser[]): Promise<Summary> {
    return new Promise((resolve, reject) => {
      const call = client.CreateUsers(within(), (err, res) => (err ? reject(err) : resolve(res!)));
      for (const req of requests) call.write(req);
      call.end();
    });
  }

  let adminId = "";
  beforeAll(async () => {
    server = await startTestServer();
    // CreateUsers needs the admin role; the harness makes "admin" an admin.
    const admin = await registerAndLogin(server.url, { username: ADMIN_USERNAME });
    const { accessToken } = admin;
    adminId = admin.userId;
    const UserService = loadClientConstructor();
    client = new UserService(`127.0.0.1:${server.port}`, grpc.credentials.createInsecure(), {
      interceptors: [bearerMetadata(accessToken)],
    });
    await new Promise<void>((resolve, reject) =>
      client.waitForReady(Date.now() + 10_000, (err) => (err ? reject(err) : resolve())),
    );
  });

  afterAll(async () => {
    client?.close();
    await server?.close();
  });

  it("registers a user (unary) and gets it back by id", async () => {
    const user = await registerUser({
      username: "grace",
      email: "grace@example.com",
      password: PASSWORD,
      displayName: "Grace Hopper",
    });
    expect(user).toMatchObject({
      username: "grace",
      email: "grace@example.com",
      displayName: "Grace Hopper",
    });
    expect(user.id).toMatch(/\S/);
    expect(user).not.toHaveProperty("password");
    expectTimestamp(user.createTime);

    expect(await getUser(user.id)).toEqual(user);
  });

  it("answers GetUser for an unknown id with NOT_FOUND", async () => {
    const err = await failure(getUser("no-such-user"));
    expect(err.code).toBe(grpc.status.NOT_FOUND);
    expect(err.details).toContain("no-such-user");
  });

  it("streams GetUserStream items in request order with NOT_FOUND items for unknown ids", async () => {
    const ann = await registerUser({
      username: "ann",
      email: "ann@example.com",
      password: PASSWORD,
    });
    const bob = await registerUser({
      username: "bob",
      email: "bob@example.com",
      password: PASSWORD,
    });
    const ids = [bob.id, "missing-1", ann.id, "missing-2", bob.id];
    const items = await readAll(client.GetUserStream({ ids }, within()));
    expect(items.map((item) => item.id)).toEqual(ids);
    expect(items.map((item) => item.result)).toEqual(["user", "error", "user", "error", "user"]);
    expect(items[0]!.user).toEqual(bob);
    expect(items[2]!.user).toEqual(ann);
    expect(items[4]!.user).toEqual(bob);
    for (const missing of [items[1]!, items[3]!]) {
      expect(missing.error?.code).toBe(grpc.status.NOT_FOUND);
      expect(missing.error?.message).toContain(missing.id);
      expect(missing.user ?? null).toBeNull();
    }
  });

  it("fails GetUserStream without ids with INVALID_ARGUMENT naming the field", async () => {
    const err = await failure(readAll(client.GetUserStream({ ids: [] }, within())));
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    const [detail] = richStatus(err).details;
    expect(anyUnpack(detail!, BadRequestSchema)?.fieldViolations.map((v) => v.field)).toEqual([
      "ids",
    ]);
  });

  it("imports a client stream with CreateUsers, reporting invalid items and in-stream duplicates", async () => {
    const summary = await createUsers([
      { username: "imp-one", email: "imp.one@example.com", password: PASSWORD },
      { username: "!bad", email: "imp.bad@example.com", password: PASSWORD },
      { username: "imp-two", email: "imp.two@example.com", password: PASSWORD },
      { username: "IMP-ONE", email: "imp.one.again@example.com", password: PASSWORD },
      { username: "imp-three", email: "Imp.Two@Example.com", password: PASSWORD },
      { username: "imp-four", email: "imp.four@example.com", password: PASSWORD },
    ]);
    created.push(...summary.users);
    expect(summary.createdCount).toBe(3);
    expect(summary.failedCount).toBe(3);
    expect(
      summary.failures.map(({ index, username, code }) => ({ index, username, code })),
    ).toEqual([
      { index: 1, username: "!bad", code: "INVALID_ARGUMENT" },
      { index: 3, username: "IMP-ONE", code: "ALREADY_EXISTS" },
      { index: 4, username: "imp-three", code: "ALREADY_EXISTS" },
    ]);
    expect(summary.failures[0]!.message).toContain("username");
    expect(summary.users.map((u) => u.username)).toEqual(["imp-one", "imp-two", "imp-four"]);
    for (const user of summary.users) expectTimestamp(user.createTime);
    // What the summary reports really is stored.
    for (const user of summary.users) expect(await getUser(user.id)).toEqual(user);
  });

  it("returns every bad field as a BadRequest in grpc-status-details-bin", async () => {
    const err = await failure(
      registerUser({
        username: "-x",
        email: "not an email",
        password: "short",
        displayName: "tab\there",
      }),
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    const status = richStatus(err);
    const badRequests = status.details.filter((any) => anyIs(any, BadRequestSchema));
    expect(badRequests).toHaveLength(1);
    expect(badRequests[0]!.typeUrl).toBe("type.googleapis.com/google.rpc.BadRequest");
    const badRequest = anyUnpack(badRequests[0]!, BadRequestSchema)!;
    const fields = new Set(badRequest.fieldViolations.map((v) => v.field));
    expect([...fields].sort()).toEqual(["display_name", "email", "password", "username"]);
    for (const violation of badRequest.fieldViolations) {
      expect(violation.description).toMatch(/\S/);
    }
  });

  it("rejects a username or email taken in another case with ALREADY_EXISTS and ErrorInfo", async () => {
    await registerUser({ username: "alice", email: "alice@example.com", password: PASSWORD });

    const byName = await failure(
      registerUser({ username: "Alice", email: "alice2@example.com", password: PASSWORD }),
    );
    expect(byName.code).toBe(grpc.status.ALREADY_EXISTS);
    const nameInfo = richStatus(byName)
      .details.filter((any) => anyIs(any, ErrorInfoSchema))
      .map((any) => anyUnpack(any, ErrorInfoSchema)!);
    expect(nameInfo).toHaveLength(1);
    expect(nameInfo[0]).toMatchObject({ reason: "USERNAME_TAKEN", domain: "switchboard.dev" });

    const byEmail = await failure(
      registerUser({ username: "alice2", email: "ALICE@example.com", password: PASSWORD }),
    );
    expect(byEmail.code).toBe(grpc.status.ALREADY_EXISTS);
    const [emailDetail] = richStatus(byEmail).details;
    expect(anyUnpack(emailDetail!, ErrorInfoSchema)).toMatchObject({
      reason: "EMAIL_TAKEN",
      domain: "switchboard.dev",
    });
  });

  it("lets exactly one of 10 concurrent registrations of one username succeed", async () => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        registerUser({ username: "racer", email: `racer${i}@example.com`, password: PASSWORD }),
      ),
    );
    const ok = results.filter((r) => r.status === "fulfilled");
    const failed = results
      .filter((r) => r.status === "rejected")
      .map((r) => r.reason as grpc.ServiceError);
    expect(ok).toHaveLength(1);
    expect(failed).toHaveLength(9);
    for (const err of failed) {
      expect(err.code, err.message).toBe(grpc.status.ALREADY_EXISTS);
      const [detail] = richStatus(err).details;
      expect(anyUnpack(detail!, ErrorInfoSchema)?.reason).toBe("USERNAME_TAKEN");
    }
    const winner = (ok[0] as PromiseFulfilledResult<User>).value;
    expect(await getUser(winner.id)).toEqual(winner);
  });

  it("watches existing users in creation order, then a live one, until the client cancels", {
    timeout: 20_000,
  }, async () => {
    for (let i = created.length; i < 3; i++) {
      await registerUser({
        username: `seed-${i}`,
        email: `seed${i}@example.com`,
        password: PASSWORD,
      });
    }
    // The admin this suite logs in as registered first.
    const existing = [adminId, ...created.map((u) => u.id)];

    const feed = watch(client, "");
    let history: WatchItem[] = [];
    try {
      history = await feed.waitFor(existing.length);
      expect(history.map((item) => item.user.id)).toEqual(existing);
      expect(new Set(history.map((item) => item.cursor)).size).toBe(history.length);

      const live = await registerUser({
        username: "live-one",
        email: "live.one@example.com",
        password: PASSWORD,
      });
      const after = await feed.waitFor(existing.length + 1);
      expect(after).toHaveLength(existing.length + 1);
      expect(after.at(-1)!.user).toEqual(live);
    } finally {
      const ended = await feed.cancel();
      expect((ended as grpc.ServiceError).code, ended.message).toBe(grpc.status.CANCELLED);
    }

    // Resuming after the 2nd item starts with the 3rd: no gap, no duplicate.
    const resumed = watch(client, history[1]!.cursor);
    try {
      const expected = [adminId, ...created.map((u) => u.id)].slice(2);
      const items = await resumed.waitFor(expected.length);
      expect(items.map((item) => item.user.id)).toEqual(expected);
      expect(items[0]!.cursor).toBe(history[2]!.cursor);
    } finally {
      await resumed.cancel();
    }
  });
});
