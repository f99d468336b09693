import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { BadRequestSchema, ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { UserSchema, UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { hashPassword, verifyPassword } from "../auth/passwords.js";
import { WakeSignal } from "../events/wake-signal.js";
import { openStore } from "../storage/index.js";
import type { Store } from "../storage/store.js";
import { userRequestExemptions, userRequestSchemas } from "../validation/user-requests.js";
import { requestRules, validationInterceptor } from "../validation/validation-interceptor.js";
import { createUserService, decodeCursor, encodeCursor } from "./user-service.js";

let store: Store;
let dir: string;
let client: ReturnType<typeof createClient<typeof UserService>>;
let userCreated: WakeSignal;

beforeEach(async () => {
  dir = join(tmpdir(), `switchboard-users-${process.pid}-${Date.now()}-${Math.random()}`);
  store = await openStore({ dataDir: dir });
  userCreated = new WakeSignal();
  const service = createUserService({
    store,
    userCreated,
    logger: pino({ level: "silent" }),
    hashPassword,
  });
  client = createClient(
    UserService,
    createRouterTransport(({ service: register }) => register(UserService, service), {
      router: {
        interceptors: [
          validationInterceptor(requestRules(userRequestSchemas, userRequestExemptions)),
        ],
      },
    }),
  );
});
afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

const alice = { username: "alice", email: "alice@example.com", password: "correct horse" };

describe("UserService.RegisterUser", () => {
  it("stores only an argon2id hash of the password and never returns it", async () => {
    const { user } = await client.registerUser({ ...alice, displayName: "Alice" });
    const stored = await store.getUser(user!.id);
    expect(stored?.passwordHash).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(await verifyPassword(stored!.passwordHash, "correct horse")).toBe(true);
    expect(JSON.stringify(toJson(UserSchema, user!))).not.toContain("argon2");
    expect(Object.keys(user!)).not.toContain("password");
  });

  it("lists every bad field in one BadRequest", async () => {
    const err = await rejection(
      client.registerUser({
        username: "-x",
        email: "not-an-email",
        password: "short",
        displayName: "d".repeat(65),
      }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    const [badRequest] = err.findDetails(BadRequestSchema);
    expect(badRequest?.fieldViolations.map((v) => v.field).sort()).toEqual([
      "display_name",
      "email",
      "password",
      "username",
      "username",
    ]);
  });

  it("refuses a username that differs only in case with USERNAME_TAKEN, and an email with EMAIL_TAKEN", async () => {
    await client.registerUser(alice);
    const byName = await rejection(
      client.registerUser({ ...alice, username: "ALICE", email: "other@example.com" }),
    );
    expect(byName.code).toBe(Code.AlreadyExists);
    expect(byName.findDetails(ErrorInfoSchema)[0]?.reason).toBe("USERNAME_TAKEN");
    const byEmail = await rejection(
      client.registerUser({ ...alice, username: "alice2", email: "Alice@Example.com" }),
    );
    expect(byEmail.findDetails(ErrorInfoSchema)[0]?.reason).toBe("EMAIL_TAKEN");
  });
});

describe("UserService.GetUserStream", () => {
  it("answers each id in request order, an unknown id with NOT_FOUND, without ending the stream", async () => {
    const a = (await client.registerUser(alice)).user!;
    const b = (await client.registerUser({ ...alice, username: "bob", email: "b@example.com" }))
      .user!;
    const items = [];
    for await (const item of client.getUserStream({ ids: [b.id, "ghost", a.id] })) items.push(item);
    expect(items.map((i) => i.id)).toEqual([b.id, "ghost", a.id]);
    expect(items.map((i) => i.result.case)).toEqual(["user", "error", "user"]);
    const ghost = items[1]!.result;
    expect(ghost.case === "error" && ghost.value.code).toBe(Code.NotFound);
  });

  it("rejects more than 1000 ids with a BadRequest on ids", async () => {
    const err = await rejection(
      (async () => {
        for await (const _ of client.getUserStream({ ids: Array(1001).fill("x") }));
      })(),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("ids");
  });
});

describe("UserService.CreateUsers", () => {
  it("creates the good items, reports each bad one by index, and lets the first of two duplicates win", async () => {
    async function* items() {
      yield { username: "one", email: "one@example.com", password: "password-1" };
      yield { username: "ONE", email: "uno@example.com", password: "password-2" };
      yield { username: "two", email: "two@example.com", password: "short" };
      yield { username: "three", email: "three@example.com", password: "password-3" };
    }
    const res = await client.createUsers(items());
    expect(res.createdCount).toBe(2);
    expect(res.failedCount).toBe(2);
    expect(res.users.map((u) => u.username)).toEqual(["one", "three"]);
    expect(res.failures.map((f) => [f.index, f.username, f.code])).toEqual([
      [1, "ONE", Code.AlreadyExists],
      [2, "two", Code.InvalidArgument],
    ]);
    expect(res.failures[1]?.message).toContain("password");
  });
});

describe("UserService.WatchUsers", () => {
  it("lists existing users in creation order, then new ones live, each with a resumable cursor", async () => {
    for (const name of ["usr1", "usr2", "usr3"]) {
      await client.registerUser({
        username: name,
        email: `${name}@example.com`,
        password: "password-x",
      });
    }
    const controller = new AbortController();
    const seen: Array<{ username: string; cursor: string }> = [];
    const watching = (async () => {
      for await (const item of client.watchUsers({}, { signal: controller.signal })) {
        seen.push({ username: item.user!.username, cursor: item.cursor });
      }
    })().catch(() => undefined);
    await expect.poll(() => seen.length).toBe(3);
    await client.registerUser({
      username: "usr4",
      email: "usr4@example.com",
      password: "password-x",
    });
    await expect.poll(() => seen.length).toBe(4);
    controller.abort();
    await watching;
    expect(seen.map((s) => s.username)).toEqual(["usr1", "usr2", "usr3", "usr4"]);

    const resumed: string[] = [];
    const again = new AbortController();
    const resuming = (async () => {
      for await (const item of client.watchUsers(
        { afterCursor: seen[1]!.cursor },
        { signal: again.signal },
      )) {
        resumed.push(item.user!.username);
      }
    })().catch(() => undefined);
    await expect.poll(() => resumed.length).toBe(2);
    again.abort();
    await resuming;
    expect(resumed).toEqual(["usr3", "usr4"]);
    expect(userCreated.waiting).toBe(0);
  });

  it("rejects a cursor it did not issue with a BadRequest on after_cursor", async () => {
    const err = await rejection(
      (async () => {
        for await (const _ of client.watchUsers({ afterCursor: "not-a-cursor" }));
      })(),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("after_cursor");
  });

  it("pages through more users than one store query returns", async () => {
    const many = 230;
    async function* items() {
      for (let i = 0; i < many; i++) {
        yield { username: `bulk${i}`, email: `bulk${i}@example.com`, password: "password-x" };
      }
    }
    expect((await client.createUsers(items())).createdCount).toBe(many);
    const names: string[] = [];
    const controller = new AbortController();
    const watching = (async () => {
      for await (const item of client.watchUsers({}, { signal: controller.signal })) {
        names.push(item.user!.username);
      }
    })().catch(() => undefined);
    await expect.poll(() => names.length, { timeout: 10_000 }).toBe(many);
    controller.abort();
    await watching;
    expect(new Set(names).size).toBe(many);
    expect(names[0]).toBe("bulk0");
    expect(names[many - 1]).toBe(`bulk${many - 1}`);
  }, 60_000);
});

describe("cursors", () => {
  it("round-trip and are opaque", () => {
    expect(decodeCursor(encodeCursor(42))).toBe(42);
    expect(encodeCursor(42)).not.toContain("42");
    expect(decodeCursor("")).toBe(0);
  });
});
