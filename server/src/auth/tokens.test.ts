import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { base64url, errors, generateKeyPair, SignJWT } from "jose";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { ERROR_DOMAIN, Reason } from "../errors.js";
import { hashRefreshToken, newRefreshToken } from "./refresh-tokens.js";
import {
  ACCESS_TOKEN_TYPE,
  createTokenService,
  loadSigningKey,
  SIGNING_KEY_FILE,
  type TokenService,
} from "./tokens.js";

const key = new Uint8Array(randomBytes(32));
const t0 = new Date(Date.UTC(2025, 2, 4, 5, 6, 7));
const claims = {
  userId: "0194f3a2-0000-7000-8000-000000000001",
  username: "ada",
  roles: ["user"],
  sessionId: "0194f3a2-0000-7000-8000-0000000000aa",
} as const;

/** A token service whose clock reads `at`. */
function serviceAt(at: Date, overrides: { key?: Uint8Array } = {}): TokenService {
  return createTokenService({ key: overrides.key ?? key, accessTtlSeconds: 900, now: () => at });
}

const later = (seconds: number) => new Date(t0.getTime() + seconds * 1000);

async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (error) {
    expect(error).toBeInstanceOf(ConnectError);
    return error as ConnectError;
  }
  throw new Error("expected a rejection");
}

/** Asserts an Unauthenticated error with exactly this ErrorInfo reason and no library text. */
async function expectReason(promise: Promise<unknown>, reason: Reason): Promise<ConnectError> {
  const err = await rejection(promise);
  expect(err.code).toBe(Code.Unauthenticated);
  const [info] = err.findDetails(ErrorInfoSchema);
  expect(info?.reason).toBe(reason);
  expect(info?.domain).toBe(ERROR_DOMAIN);
  expect(err.rawMessage).not.toMatch(/jws|jwt|signature|claim|"|alg/i);
  return err;
}

const b64 = (value: object) => base64url.encode(JSON.stringify(value));

/** A token signed with `signKey`, with Switchboard's claims unless overridden. */
async function forge(
  options: {
    alg?: string;
    signKey?: Parameters<SignJWT["sign"]>[0];
    payload?: Record<string, unknown>;
    typ?: string;
    iss?: string;
    aud?: string;
  } = {},
): Promise<string> {
  const iat = Math.floor(t0.getTime() / 1000);
  return new SignJWT(
    options.payload ?? { name: claims.username, roles: claims.roles, sid: claims.sessionId },
  )
    .setProtectedHeader({ alg: options.alg ?? "HS256", typ: options.typ ?? ACCESS_TOKEN_TYPE })
    .setIssuer(options.iss ?? "switchboard")
    .setAudience(options.aud ?? "switchboard-api")
    .setSubject(claims.userId)
    .setIssuedAt(iat)
    .setExpirationTime(iat + 900)
    .setJti("jti-1")
    .sign(options.signKey ?? key);
}

describe("createTokenService", () => {
  const tokens = serviceAt(t0);

  it("issues a token that verifies back to the same caller", async () => {
    const { token, expireTime } = await tokens.issueAccessToken(claims);
    expect(expireTime).toEqual(later(900));
    await expect(tokens.verifyAccessToken(token)).resolves.toEqual({ ...claims });
  });

  it("writes HS256, the access-token type, sub, name, roles, sid, iss, aud, iat, exp and jti", async () => {
    const { token } = await tokens.issueAccessToken({ ...claims, roles: ["user", "admin"] });
    const [header, payload] = token
      .split(".")
      .slice(0, 2)
      .map((part) => JSON.parse(Buffer.from(part, "base64url").toString()));
    expect(header).toEqual({ alg: "HS256", typ: "at+jwt" });
    expect(payload).toEqual({
      sub: claims.userId,
      name: "ada",
      roles: ["user", "admin"],
      sid: claims.sessionId,
      iss: "switchboard",
      aud: "switchboard-api",
      iat: t0.getTime() / 1000,
      exp: t0.getTime() / 1000 + 900,
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    const other = await tokens.issueAccessToken(claims);
    expect(
      JSON.parse(Buffer.from(other.token.split(".")[1]!, "base64url").toString()).jti,
    ).not.toBe(payload.jti);
  });

  it("accepts a token within the clock tolerance on either side", async () => {
    const { token } = await tokens.issueAccessToken(claims);
    // The verifier's clock is 4 s past expiry, or 4 s behind the issuer's.
    await expect(serviceAt(later(904)).verifyAccessToken(token)).resolves.toEqual({ ...claims });
    await expect(serviceAt(later(-4)).verifyAccessToken(token)).resolves.toEqual({ ...claims });
  });

  it("refuses a token issued further in the future than the clock tolerance with TOKEN_INVALID", async () => {
    const { token } = await serviceAt(later(60)).issueAccessToken(claims);
    await expectReason(serviceAt(t0).verifyAccessToken(token), Reason.TOKEN_INVALID);
    // Within the tolerance it is a clock difference, not a forgery.
    const { token: close } = await serviceAt(later(4)).issueAccessToken(claims);
    await expect(serviceAt(t0).verifyAccessToken(close)).resolves.toEqual({ ...claims });
  });

  it("refuses an expired token with TOKEN_EXPIRED, keeping the library error as cause", async () => {
    const { token } = await tokens.issueAccessToken(claims);
    const err = await expectReason(
      serviceAt(later(906)).verifyAccessToken(token),
      Reason.TOKEN_EXPIRED,
    );
    expect(err.cause).toBeInstanceOf(errors.JWTExpired);
  });

  describe("remembering verified tokens", () => {
    /** A service whose clock the test moves. */
    const movable = (options: { verifiedCacheSize?: number } = {}) => {
      let at = t0;
      const service = createTokenService({
        key,
        accessTtlSeconds: 900,
        now: () => at,
        ...options,
      });
      return { service, move: (seconds: number) => (at = later(seconds)) };
    };

    it("answers a token seen before from memory (the same frozen result)", async () => {
      const { service } = movable();
      const { token } = await service.issueAccessToken(claims);
      const first = await service.verifyAccessToken(token);
      expect(await service.verifyAccessToken(token)).toBe(first);
      expect(Object.isFrozen(first)).toBe(true);
    });

    it("still refuses a remembered token once the clock passes exp plus the tolerance", async () => {
      const { service, move } = movable();
      const { token } = await service.issueAccessToken(claims);
      await service.verifyAccessToken(token);
      move(904);
      await expect(service.verifyAccessToken(token)).resolves.toEqual({ ...claims });
      move(905);
      await expectReason(service.verifyAccessToken(token), Reason.TOKEN_EXPIRED);
      move(0); // with the clock set back, a full verification accepts it again
      await expect(service.verifyAccessToken(token)).resolves.toEqual({ ...claims });
    });

    it("does not let a remembered token vouch for an altered copy", async () => {
      const { service } = movable();
      const { token } = await service.issueAccessToken(claims);
      await service.verifyAccessToken(token);
      const [header, payload, signature] = token.split(".") as [string, string, string];
      const claimsJson = JSON.parse(Buffer.from(payload, "base64url").toString());
      const forged = `${header}.${b64({ ...claimsJson, roles: ["admin"] })}.${signature}`;
      await expectReason(service.verifyAccessToken(forged), Reason.TOKEN_INVALID);
      await expectReason(service.verifyAccessToken(`${token}x`), Reason.TOKEN_INVALID);
    });

    it("stays bounded: beyond verifiedCacheSize the oldest are forgotten and verified afresh", async () => {
      const { service } = movable({ verifiedCacheSize: 2 });
      const issued = await Promise.all(
        ["a", "b", "c"].map((sid) => service.issueAccessToken({ ...claims, sessionId: sid })),
      );
      const results = [];
      for (const { token } of issued) results.push(await service.verifyAccessToken(token));
      // "a" was evicted: verified again, a new (equal) result.
      const again = await service.verifyAccessToken(issued[0]!.token);
      expect(again).not.toBe(results[0]);
      expect(again).toEqual(results[0]);
      // "c" is still remembered.
      expect(await service.verifyAccessToken(issued[2]!.token)).toBe(results[2]);
    });
  });

  it("reports an expired token with a bad signature as TOKEN_INVALID, not expired", async () => {
    const { token } = await serviceAt(t0, {
      key: new Uint8Array(randomBytes(32)),
    }).issueAccessToken(claims);
    await expectReason(serviceAt(later(10_000)).verifyAccessToken(token), Reason.TOKEN_INVALID);
  });

  it("refuses a token whose payload was changed", async () => {
    const { token } = await tokens.issueAccessToken(claims);
    const [header, , signature] = token.split(".");
    const payload = JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
    const forged = `${header}.${b64({ ...payload, roles: ["admin"] })}.${signature}`;
    const err = await expectReason(tokens.verifyAccessToken(forged), Reason.TOKEN_INVALID);
    expect(err.cause).toBeInstanceOf(errors.JWSSignatureVerificationFailed);
  });

  it("refuses a token whose signature was changed", async () => {
    const { token } = await tokens.issueAccessToken(claims);
    const [header, payload, signature] = token.split(".") as [string, string, string];
    const flipped = (signature[0] === "A" ? "B" : "A") + signature.slice(1);
    await expectReason(
      tokens.verifyAccessToken(`${header}.${payload}.${flipped}`),
      Reason.TOKEN_INVALID,
    );
    await expectReason(tokens.verifyAccessToken(`${header}.${payload}.`), Reason.TOKEN_INVALID);
  });

  it("refuses a token signed with another key", async () => {
    const { token } = await serviceAt(t0, {
      key: new Uint8Array(randomBytes(32)),
    }).issueAccessToken(claims);
    await expectReason(tokens.verifyAccessToken(token), Reason.TOKEN_INVALID);
  });

  it("refuses an unsecured token (alg none)", async () => {
    const iat = Math.floor(t0.getTime() / 1000);
    const payload = {
      sub: claims.userId,
      name: claims.username,
      roles: ["admin"],
      sid: claims.sessionId,
      iss: "switchboard",
      aud: "switchboard-api",
      iat,
      exp: iat + 900,
      jti: "x",
    };
    for (const header of [
      { alg: "none", typ: "JWT" },
      { alg: "none", typ: ACCESS_TOKEN_TYPE },
      { alg: "NONE", typ: ACCESS_TOKEN_TYPE },
    ]) {
      const unsecured = `${b64(header)}.${b64(payload)}.`;
      const err = await expectReason(tokens.verifyAccessToken(unsecured), Reason.TOKEN_INVALID);
      expect(err.cause).toBeInstanceOf(errors.JOSEError);
    }
  });

  it("refuses HS512 even with the right key", async () => {
    const token = await forge({ alg: "HS512" });
    const err = await expectReason(tokens.verifyAccessToken(token), Reason.TOKEN_INVALID);
    expect(err.cause).toBeInstanceOf(errors.JOSEAlgNotAllowed);
  });

  it.each(["RS256", "ES256", "EdDSA"])(
    "refuses a token signed %s with another key",
    async (alg) => {
      const { privateKey } = await generateKeyPair(alg);
      const token = await forge({ alg, signKey: privateKey });
      await expectReason(tokens.verifyAccessToken(token), Reason.TOKEN_INVALID);
    },
  );

  it("refuses a wrong issuer, a wrong audience and a wrong token type", async () => {
    for (const token of [
      await forge({ iss: "someone-else" }),
      await forge({ aud: "another-api" }),
      await forge({ typ: "JWT" }),
    ]) {
      await expectReason(tokens.verifyAccessToken(token), Reason.TOKEN_INVALID);
    }
    // Sanity: the forger produces accepted tokens when nothing is wrong.
    await expect(tokens.verifyAccessToken(await forge())).resolves.toEqual({ ...claims });
  });

  it("refuses tokens with missing or mistyped claims", async () => {
    const good = { name: claims.username, roles: claims.roles, sid: claims.sessionId };
    for (const payload of [
      { roles: good.roles, sid: good.sid },
      { name: good.name, sid: good.sid },
      { name: good.name, roles: good.roles },
      { ...good, roles: "admin" },
      { ...good, roles: [1] },
      { ...good, sid: 7 },
      { ...good, name: null },
    ]) {
      await expectReason(tokens.verifyAccessToken(await forge({ payload })), Reason.TOKEN_INVALID);
    }
    const noJti = await new SignJWT(good)
      .setProtectedHeader({ alg: "HS256", typ: ACCESS_TOKEN_TYPE })
      .setIssuer("switchboard")
      .setAudience("switchboard-api")
      .setSubject(claims.userId)
      .setIssuedAt(Math.floor(t0.getTime() / 1000))
      .setExpirationTime(Math.floor(t0.getTime() / 1000) + 900)
      .sign(key);
    await expectReason(tokens.verifyAccessToken(noJti), Reason.TOKEN_INVALID);
  });

  it.each([
    ["empty", ""],
    ["one word", "garbage"],
    ["three dots", "a.b.c"],
    ["JSON", '{"alg":"HS256"}'],
    ["bearer prefix", "Bearer x.y.z"],
    ["huge", "a".repeat(100_000)],
  ])("refuses garbage (%s) with TOKEN_INVALID", async (_, token) => {
    await expectReason(tokens.verifyAccessToken(token), Reason.TOKEN_INVALID);
  });

  it("refuses a key shorter than 32 bytes", () => {
    expect(() => createTokenService({ key: new Uint8Array(16), accessTtlSeconds: 60 })).toThrow(
      RangeError,
    );
  });
});

describe("loadSigningKey", () => {
  let dir: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "sb-keys-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("returns the configured key, even in production", async () => {
    const configured = randomBytes(32);
    const loaded = await loadSigningKey({ configured, dataDir: dir, env: "production" });
    expect(Buffer.from(loaded).equals(configured)).toBe(true);
    await expect(stat(join(dir, SIGNING_KEY_FILE))).rejects.toThrow();
  });

  it("refuses a configured key shorter than 32 bytes", async () => {
    await expect(
      loadSigningKey({ configured: randomBytes(16), dataDir: dir, env: "development" }),
    ).rejects.toThrow(/32 bytes/);
  });

  it("throws in production without a configured key, and writes nothing", async () => {
    await expect(
      loadSigningKey({ configured: undefined, dataDir: dir, env: "production" }),
    ).rejects.toThrow(/AUTH_SIGNING_KEY/);
    await expect(stat(join(dir, SIGNING_KEY_FILE))).rejects.toThrow();
  });

  it("generates a 32-byte key once, readable only by the owner, and reuses it", async () => {
    const dataDir = join(dir, "not", "yet", "there");
    const first = await loadSigningKey({ configured: undefined, dataDir, env: "development" });
    expect(first).toHaveLength(32);
    const file = join(dataDir, SIGNING_KEY_FILE);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(Buffer.from((await readFile(file, "utf8")).trim(), "base64url").equals(first)).toBe(
      true,
    );

    const again = await loadSigningKey({ configured: undefined, dataDir, env: "test" });
    expect(Buffer.from(again).equals(Buffer.from(first))).toBe(true);

    // A token issued before a "restart" verifies after it.
    const before = createTokenService({ key: first, accessTtlSeconds: 60 });
    const after = createTokenService({ key: again, accessTtlSeconds: 60 });
    const { token } = await before.issueAccessToken(claims);
    await expect(after.verifyAccessToken(token)).resolves.toEqual({ ...claims });
  });

  it("creates a missing DATA_DIR readable only by the owner (0700)", async () => {
    const dataDir = join(dir, "fresh");
    await loadSigningKey({ configured: undefined, dataDir, env: "development" });
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
  });

  it("agrees on one key when several starts race to create it", async () => {
    const keys = await Promise.all(
      Array.from({ length: 8 }, () =>
        loadSigningKey({ configured: undefined, dataDir: dir, env: "development" }),
      ),
    );
    for (const k of keys) {
      expect(Buffer.from(k).equals(Buffer.from(keys[0]!))).toBe(true);
    }
    expect(await readdir(dir)).toEqual([SIGNING_KEY_FILE]);
  });

  it("refuses a damaged key file instead of silently replacing it", async () => {
    await writeFile(join(dir, SIGNING_KEY_FILE), "short\n", { mode: 0o600 });
    await expect(
      loadSigningKey({ configured: undefined, dataDir: dir, env: "development" }),
    ).rejects.toThrow(/delete it/);
  });
});

describe("refresh tokens", () => {
  it("are 32 random bytes in base64url, never repeating", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100; i += 1) {
      const token = newRefreshToken();
      expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(Buffer.from(token, "base64url")).toHaveLength(32);
      seen.add(token);
    }
    expect(seen.size).toBe(100);
  });

  it("are stored as their SHA-256 in hex", () => {
    expect(hashRefreshToken("abc")).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
    const token = newRefreshToken();
    expect(hashRefreshToken(token)).toMatch(/^[0-9a-f]{64}$/);
    expect(hashRefreshToken(token)).not.toContain(token);
  });
});
