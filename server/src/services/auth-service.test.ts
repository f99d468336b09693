import { randomBytes } from "node:crypto";
import { readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Interceptor,
} from "@connectrpc/connect";
import { pino } from "pino";
import { v7 as uuidv7 } from "uuid";
import { afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../../../gen/google/rpc/error_details_pb.js";
import { AuthService, LoginResponseSchema } from "../../../gen/switchboard/auth/v1/auth_pb.js";
import { createLoginThrottle, type LoginThrottleLimits } from "../auth/login-throttle.js";
import { hashPassword, verifyPassword } from "../auth/passwords.js";
import { hashRefreshToken } from "../auth/refresh-tokens.js";
import { createTokenService, type TokenService } from "../auth/tokens.js";
import { kAuth, kPeer } from "../context.js";
import { Reason } from "../errors.js";
import { openStore } from "../storage/index.js";
import type { Store, UserRecord } from "../storage/store.js";
import { appRequestRules } from "../validation/request-rules.js";
import { validationInterceptor } from "../validation/validation-interceptor.js";
import { type AuthServiceDeps, createAuthService } from "./auth-service.js";

const ACCESS_TTL = 900;
const REFRESH_TTL = 3600;
const t0 = new Date(Date.UTC(2025, 3, 5, 6, 7, 8));
const PASSWORD = "correct horse";

let passwordHash: string;
let store: Store;
let dir: string;
let now: Date;
let tokens: TokenService;
let logs: Array<Record<string, unknown>>;
let verifyCalls: string[];
type AuthClient = ReturnType<typeof createClient<typeof AuthService>>;
let client: AuthClient;
/** A client of an AuthService built like `client`'s, with `extra` dependencies. */
let clientWith: (extra: Partial<AuthServiceDeps>) => AuthClient;
let ada: UserRecord;
let bob: UserRecord;

beforeAll(async () => {
  passwordHash = await hashPassword(PASSWORD);
});

/**
 * Stands in for the HTTP layer (peer from headers) and the auth interceptor
 * (kAuth from a verified bearer token), which are wired elsewhere.
 */
const httpAndAuth: Interceptor = (next) => async (req) => {
  req.contextValues.set(kPeer, {
    ip: req.header.get("x-test-ip") ?? "203.0.113.7",
    userAgent: req.header.get("user-agent") ?? "",
  });
  const authorization = req.header.get("authorization");
  if (authorization?.startsWith("Bearer ")) {
    req.contextValues.set(kAuth, await tokens.verifyAccessToken(authorization.slice(7)));
  }
  return next(req);
};

beforeEach(async () => {
  dir = join(tmpdir(), `switchboard-auth-${process.pid}-${Date.now()}-${Math.random()}`);
  store = await openStore({ dataDir: dir });
  now = t0;
  const clock = () => now;
  tokens = createTokenService({
    key: new Uint8Array(randomBytes(32)),
    accessTtlSeconds: ACCESS_TTL,
    now: clock,
  });
  logs = [];
  verifyCalls = [];
  const logger = pino(
    { level: "info" },
    { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) },
  );
  clientWith = (extra) => {
    const service = createAuthService({
      store,
      tokens,
      logger,
      refreshTtlSeconds: REFRESH_TTL,
      verifyPassword: (phc, password) => {
        verifyCalls.push(phc);
        return verifyPassword(phc, password);
      },
      clock,
      ...extra,
    });
    return createClient(
      AuthService,
      createRouterTransport(({ service: register }) => register(AuthService, service), {
        router: { interceptors: [httpAndAuth, validationInterceptor(appRequestRules)] },
      }),
    );
  };
  client = clientWith({});
  ada = await store.createUser({
    id: uuidv7(),
    username: "Ada",
    email: "ada@example.com",
    displayName: "Ada Lovelace",
    passwordHash,
    createTime: t0,
  });
  bob = await store.createUser({
    id: uuidv7(),
    username: "bob",
    email: "bob@example.com",
    displayName: "",
    passwordHash,
    createTime: t0,
  });
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

const reasonOf = (err: ConnectError) => err.findDetails(ErrorInfoSchema)[0]?.reason;

async function expectFailure(call: Promise<unknown>, code: Code, reason: Reason) {
  const err = await rejection(call);
  expect({ code: Code[err.code], reason: reasonOf(err) }).toEqual({ code: Code[code], reason });
  return err;
}

const bearer = (accessToken: string) => ({ headers: { authorization: `Bearer ${accessToken}` } });
const login = (username = "ada", ua = "test-browser/1.0") =>
  client.login({ username, password: PASSWORD }, { headers: { "user-agent": ua } });
const secondsAfter = (seconds: number) => new Date(t0.getTime() + seconds * 1000);

describe("AuthService.Login", () => {
  it.each(["Ada", "ada", "ADA", "ada@example.com", "Ada@Example.COM"])(
    "signs in with %s (username or email, case-insensitively)",
    async (name) => {
      const res = await login(name);
      expect(res.user?.id).toBe(ada.id);
      expect(res.user?.username).toBe("Ada");
      expect(res.accessToken.split(".")).toHaveLength(3);
      expect(res.refreshToken).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(timestampDate(res.accessTokenExpireTime!)).toEqual(secondsAfter(ACCESS_TTL));
      expect(timestampDate(res.refreshTokenExpireTime!)).toEqual(secondsAfter(REFRESH_TTL));
      expect(JSON.stringify(toJson(LoginResponseSchema, res))).not.toMatch(/argon2|password/i);
    },
  );

  it("answers a wrong password and an unknown user identically, after one argon2 check each", async () => {
    const wrongPassword = await rejection(client.login({ username: "ada", password: "nope" }));
    expect(verifyCalls).toEqual([passwordHash]);
    const unknownUser = await rejection(
      client.login({ username: "nobody@example.com", password: PASSWORD }),
    );
    expect(verifyCalls).toHaveLength(2);
    // The unknown user still costs a real argon2id verification (a dummy hash).
    expect(verifyCalls[1]).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$/);
    expect(verifyCalls[1]).not.toBe(passwordHash);

    for (const err of [wrongPassword, unknownUser]) {
      expect(err.code).toBe(Code.Unauthenticated);
      expect(reasonOf(err)).toBe(Reason.INVALID_CREDENTIALS);
    }
    const shape = (err: ConnectError) => ({
      code: err.code,
      message: err.rawMessage,
      details: err.findDetails(ErrorInfoSchema),
      metadata: [...err.metadata],
    });
    expect(shape(unknownUser)).toEqual(shape(wrongPassword));
    expect(wrongPassword.rawMessage).toBe("invalid username or password");
  });

  it("answers a stored hash it cannot read like a wrong password, and logs it", async () => {
    await store.createUser({
      id: uuidv7(),
      username: "broken",
      email: "broken@example.com",
      displayName: "",
      passwordHash: "not-a-phc-string",
      createTime: t0,
    });
    await expectFailure(login("broken"), Code.Unauthenticated, Reason.INVALID_CREDENTIALS);
    expect(logs.some((l) => l.level === 50 && /cannot be verified/.test(String(l.msg)))).toBe(true);
  });

  it("stores the session with the token's hash, the user agent and the client IP, never the token", async () => {
    const res = await client.login(
      { username: "ada", password: PASSWORD },
      { headers: { "user-agent": "Firefox/140.0", "x-test-ip": "198.51.100.23" } },
    );
    const session = await store.findSessionByTokenHash(hashRefreshToken(res.refreshToken));
    expect(session).toMatchObject({
      userId: ada.id,
      refreshTokenHash: hashRefreshToken(res.refreshToken),
      userAgent: "Firefox/140.0",
      clientIp: "198.51.100.23",
      createTime: t0,
      expireTime: secondsAfter(REFRESH_TTL),
      revokeTime: undefined,
      replacedBy: undefined,
    });
    expect(session?.familyId).not.toBe(session?.id);

    // Nowhere on disk (database or WAL) is the token itself.
    for (const file of await readdir(dir)) {
      const bytes = await readFile(join(dir, file));
      expect(bytes.includes(res.refreshToken)).toBe(false);
    }
  });

  it("issues an access token that verifies with the user's id, name, role, new session and its family", async () => {
    const res = await login();
    const session = await store.findSessionByTokenHash(hashRefreshToken(res.refreshToken));
    await expect(tokens.verifyAccessToken(res.accessToken)).resolves.toEqual({
      userId: ada.id,
      username: "Ada",
      roles: ["user"],
      sessionId: session!.id,
      familyId: session!.familyId,
    });
  });

  it("puts the admin role into the access token of an admin", async () => {
    await store.setUserRole(["ada"], "admin");
    const res = await login();
    expect((await tokens.verifyAccessToken(res.accessToken)).roles).toEqual(["admin"]);
  });

  it("starts a new family for every login", async () => {
    const a = await login();
    const b = await login();
    const [sa, sb] = await Promise.all(
      [a, b].map((r) => store.findSessionByTokenHash(hashRefreshToken(r.refreshToken))),
    );
    expect(sa?.familyId).not.toBe(sb?.familyId);
  });

  it("rejects empty or oversized fields with InvalidArgument naming each", async () => {
    const err = await rejection(client.login({ username: "", password: "" }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(
      err
        .findDetails(BadRequestSchema)[0]
        ?.fieldViolations.map((v) => v.field)
        .sort(),
    ).toEqual(["password", "username"]);
    const long = await rejection(
      client.login({ username: "a".repeat(255), password: "p".repeat(257) }),
    );
    expect(long.code).toBe(Code.InvalidArgument);
    expect(verifyCalls).toEqual([]);
  });
});

describe("AuthService.Login throttling", () => {
  const limits: LoginThrottleLimits = {
    consecutiveFailsPerAccountAndIp: 3,
    failsPerAccount: { points: 5, durationSeconds: 3600 },
    failsPerIp: { points: 8, durationSeconds: 3600 },
    lockoutSeconds: 60,
    maxLockoutSeconds: 3600,
  };
  let throttled: AuthClient;
  beforeEach(() => {
    throttled = clientWith({ loginThrottle: createLoginThrottle({ limits }) });
  });

  const from = (ip: string, username = "ada", password = "wrong password") =>
    throttled.login({ username, password }, { headers: { "x-test-ip": ip } });
  /** The call's code, and for ResourceExhausted the QuotaFailure subject and RetryInfo seconds. */
  const outcome = async (call: Promise<unknown>) => {
    try {
      await call;
      return "OK";
    } catch (e) {
      const err = ConnectError.from(e);
      if (err.code !== Code.ResourceExhausted) return Code[err.code];
      const retry = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
      return {
        subject: err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject,
        retrySeconds: retry === undefined ? undefined : Number(retry.seconds),
      };
    }
  };

  it("refuses an account attacked from many IPs with ResourceExhausted and RetryInfo, before any argon2 check", async () => {
    for (let i = 1; i <= 5; i++) {
      expect(await outcome(from(`198.51.100.${i}`))).toBe("Unauthenticated");
    }
    expect(verifyCalls).toHaveLength(5);
    // A sixth IP, even with the right password, is refused unchecked.
    for (const password of ["wrong password", PASSWORD]) {
      const refused = await outcome(from("198.51.100.6", "ada", password));
      expect(refused).toMatchObject({ subject: "login-fails:account:ada" });
      expect((refused as { retrySeconds: number }).retrySeconds).toBeGreaterThan(3500);
    }
    expect(verifyCalls).toHaveLength(5);
  });

  it("counts every name of an account together (username and email)", async () => {
    for (const [i, name] of ["ada", "ADA", "ada@example.com", "Ada", "ada@EXAMPLE.com"].entries()) {
      await outcome(from(`198.51.100.${i + 1}`, name));
    }
    expect(await outcome(from("198.51.100.9", "ada@example.com"))).toMatchObject({
      subject: "login-fails:account:ada@example.com",
    });
  });

  it("still lets the user log in from an IP they logged in from before, while the account is throttled", async () => {
    expect(await outcome(from("203.0.113.7", "ada", PASSWORD))).toBe("OK");
    for (let i = 1; i <= 6; i++) await outcome(from(`198.51.100.${i}`));
    expect(await outcome(from("198.51.100.7", "ada", PASSWORD))).toMatchObject({
      subject: "login-fails:account:ada",
    });
    expect(await outcome(from("203.0.113.7", "ada", PASSWORD))).toBe("OK");
    // Another account is not affected at all.
    expect(await outcome(from("198.51.100.7", "bob", PASSWORD))).toBe("OK");
  });

  it("locks an account+IP out after consecutive failures, for longer each time, and a success resets the count", async () => {
    const ip = "203.0.113.7";
    for (let round = 0; round < 2; round++) {
      expect(await outcome(from(ip))).toBe("Unauthenticated");
      expect(await outcome(from(ip))).toBe("Unauthenticated");
      // Two failures, then the right password: the count starts again.
      expect(await outcome(from(ip, "ada", PASSWORD))).toBe("OK");
    }
    for (let i = 0; i < 3; i++) expect(await outcome(from(ip))).toBe("Unauthenticated");
    const before = verifyCalls.length;
    expect(await outcome(from(ip, "ada", PASSWORD))).toEqual({
      subject: `login-fails:account:ada:ip:${ip}`,
      retrySeconds: 60,
    });
    expect(verifyCalls).toHaveLength(before);
    // The same IP may still try other accounts (within its own limit).
    expect(await outcome(from(ip, "bob", PASSWORD))).toBe("OK");
  });

  it("throttles a login that names no user exactly like one that does", async () => {
    for (let i = 1; i <= 5; i++) {
      expect(await outcome(from(`198.51.100.${i}`, "nobody"))).toBe("Unauthenticated");
    }
    expect(await outcome(from("198.51.100.6", "nobody"))).toMatchObject({
      subject: "login-fails:account:nobody",
    });
  });

  it("limits the failures of one IP across accounts", async () => {
    const ip = "192.0.2.1";
    for (let i = 0; i < 8; i++) {
      expect(await outcome(from(ip, `someone${i}`))).toBe("Unauthenticated");
    }
    expect(await outcome(from(ip, "bob", PASSWORD))).toMatchObject({
      subject: `login-fails:ip:${ip}`,
    });
  });
});

describe("AuthService.Refresh", () => {
  it("rotates: a new pair in the same family, the old session revoked and linked to the new one", async () => {
    const first = await login();
    now = secondsAfter(600);
    const second = await client.refresh(
      { refreshToken: first.refreshToken },
      { headers: { "user-agent": "phone/2.0", "x-test-ip": "192.0.2.44" } },
    );
    expect(second.refreshToken).not.toBe(first.refreshToken);
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(second.user?.id).toBe(ada.id);
    expect(timestampDate(second.refreshTokenExpireTime!)).toEqual(secondsAfter(600 + REFRESH_TTL));
    expect(timestampDate(second.accessTokenExpireTime!)).toEqual(secondsAfter(600 + ACCESS_TTL));

    const old = await store.findSessionByTokenHash(hashRefreshToken(first.refreshToken));
    const next = await store.findSessionByTokenHash(hashRefreshToken(second.refreshToken));
    expect(next).toMatchObject({
      familyId: old?.familyId,
      userId: ada.id,
      userAgent: "phone/2.0",
      clientIp: "192.0.2.44",
      createTime: now,
      revokeTime: undefined,
    });
    expect(old).toMatchObject({ revokeTime: now, replacedBy: next?.id });
    expect((await tokens.verifyAccessToken(second.accessToken)).sessionId).toBe(next?.id);
  });

  it("answers the just-rotated token again within 30 s with the same successor refresh token", async () => {
    const first = await login();
    const second = await client.refresh({ refreshToken: first.refreshToken });
    // The response was lost; the client retries with the token it still has.
    now = secondsAfter(30);
    const retry = await client.refresh({ refreshToken: first.refreshToken });
    expect(retry.refreshToken).toBe(second.refreshToken);
    expect(retry.refreshTokenExpireTime).toEqual(second.refreshTokenExpireTime);
    const [a, b] = await Promise.all(
      [second, retry].map((r) => tokens.verifyAccessToken(r.accessToken)),
    );
    expect(b).toEqual(a);
    // Nothing was revoked: the successor goes on working.
    await expect(client.refresh({ refreshToken: retry.refreshToken })).resolves.toBeDefined();
  });

  it("revokes the family when the rotated token comes back after its successor was used, even within 30 s", async () => {
    const first = await login();
    const second = await client.refresh({ refreshToken: first.refreshToken });
    const third = await client.refresh({ refreshToken: second.refreshToken });
    await expectFailure(
      client.refresh({ refreshToken: first.refreshToken }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_REUSED,
    );
    await expectFailure(
      client.refresh({ refreshToken: third.refreshToken }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_INVALID,
    );
  });

  it("revokes the whole family when a rotated refresh token is presented again after 30 s", async () => {
    const first = await login();
    const bystander = await login();
    const second = await client.refresh({ refreshToken: first.refreshToken });
    now = secondsAfter(31);

    await expectFailure(
      client.refresh({ refreshToken: first.refreshToken }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_REUSED,
    );
    // The thief's (or victim's) newer token is dead too.
    await expectFailure(
      client.refresh({ refreshToken: second.refreshToken }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_INVALID,
    );
    // Another login of the same user is unaffected.
    await expect(client.refresh({ refreshToken: bystander.refreshToken })).resolves.toBeDefined();

    const oldSession = await store.findSessionByTokenHash(hashRefreshToken(first.refreshToken));
    const warning = logs.find((l) => l.level === 40 && /reused/.test(String(l.msg)));
    expect(warning).toMatchObject({
      userId: ada.id,
      sessionId: oldSession?.id,
      familyId: oldSession?.familyId,
      revoked: 1,
    });
  });

  it("answers two concurrent refreshes of one token with one rotation and the same successor", async () => {
    const first = await login();
    const [a, b] = await Promise.all([
      client.refresh({ refreshToken: first.refreshToken }),
      client.refresh({ refreshToken: first.refreshToken }),
    ]);
    expect(a.refreshToken).toBe(b.refreshToken);
    await expect(client.refresh({ refreshToken: a.refreshToken })).resolves.toBeDefined();
  });

  it("refuses an expired refresh token with REFRESH_TOKEN_EXPIRED", async () => {
    const first = await login();
    now = secondsAfter(REFRESH_TTL - 1);
    const second = await client.refresh({ refreshToken: first.refreshToken });
    // Each refresh slides the window: the new token lives a full TTL from now.
    now = secondsAfter(REFRESH_TTL - 1 + REFRESH_TTL);
    await expectFailure(
      client.refresh({ refreshToken: second.refreshToken }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_EXPIRED,
    );
  });

  it("refuses an unknown refresh token with REFRESH_TOKEN_INVALID and an empty one with InvalidArgument", async () => {
    await expectFailure(
      client.refresh({ refreshToken: randomBytes(32).toString("base64url") }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_INVALID,
    );
    const empty = await rejection(client.refresh({ refreshToken: "" }));
    expect(empty.code).toBe(Code.InvalidArgument);
    expect(empty.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("refresh_token");
  });

  it("re-reads the user, so a promotion shows in the next access token", async () => {
    const first = await login();
    await store.setUserRole(["ADA"], "admin");
    const second = await client.refresh({ refreshToken: first.refreshToken });
    expect((await tokens.verifyAccessToken(second.accessToken)).roles).toEqual(["admin"]);
    expect(second.user?.username).toBe("Ada");
  });
});

describe("AuthService.Logout", () => {
  it("revokes the session, so its refresh token stops working", async () => {
    const res = await login();
    await expect(
      client.logout({ refreshToken: res.refreshToken }, bearer(res.accessToken)),
    ).resolves.toBeDefined();
    const session = await store.findSessionByTokenHash(hashRefreshToken(res.refreshToken));
    expect(session).toMatchObject({ revokeTime: t0, replacedBy: undefined });
    await expectFailure(
      client.refresh({ refreshToken: res.refreshToken }),
      Code.Unauthenticated,
      Reason.REFRESH_TOKEN_INVALID,
    );
  });

  it("is idempotent for a session of the caller that is already revoked", async () => {
    const res = await login();
    await client.logout({ refreshToken: res.refreshToken }, bearer(res.accessToken));
    now = secondsAfter(5);
    await expect(
      client.logout({ refreshToken: res.refreshToken }, bearer(res.accessToken)),
    ).resolves.toBeDefined();
    const session = await store.findSessionByTokenHash(hashRefreshToken(res.refreshToken));
    expect(session?.revokeTime).toEqual(t0);
  });

  it("ends only that session, not the user's other logins", async () => {
    const phone = await login("ada", "phone");
    const laptop = await login("ada", "laptop");
    await client.logout({ refreshToken: phone.refreshToken }, bearer(phone.accessToken));
    await expect(client.refresh({ refreshToken: laptop.refreshToken })).resolves.toBeDefined();
  });

  it("requires an access token (TOKEN_MISSING)", async () => {
    const res = await login();
    await expectFailure(
      client.logout({ refreshToken: res.refreshToken }),
      Code.Unauthenticated,
      Reason.TOKEN_MISSING,
    );
    await expect(client.refresh({ refreshToken: res.refreshToken })).resolves.toBeDefined();
  });

  it("refuses another user's refresh token, and an unknown one, alike, leaving the other session alive", async () => {
    const adaSession = await login("ada");
    const bobSession = await login("bob");
    const foreign = await expectFailure(
      client.logout({ refreshToken: adaSession.refreshToken }, bearer(bobSession.accessToken)),
      Code.PermissionDenied,
      Reason.REFRESH_TOKEN_INVALID,
    );
    const unknown = await expectFailure(
      client.logout(
        { refreshToken: randomBytes(32).toString("base64url") },
        bearer(bobSession.accessToken),
      ),
      Code.PermissionDenied,
      Reason.REFRESH_TOKEN_INVALID,
    );
    expect(unknown.rawMessage).toBe(foreign.rawMessage);
    expect(logs.some((l) => l.level === 40 && l.userId === bob.id)).toBe(true);
    await expect(client.refresh({ refreshToken: adaSession.refreshToken })).resolves.toBeDefined();
  });
});
