import { randomBytes, randomUUID } from "node:crypto";
import { link, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { errors, type JWTPayload, jwtVerify, SignJWT } from "jose";
import { LRUCache } from "lru-cache";
import type { AuthInfo } from "../context.js";
import { Reason, unauthenticated } from "../errors.js";
import { ensurePrivateDir } from "../storage/private-files.js";

/**
 * Access tokens: short-lived JWTs signed with HMAC-SHA256 under one symmetric
 * key. Verification pins the algorithm (HS256 only, so `alg: none` and
 * algorithm-confusion tokens are refused), the issuer, the audience and the
 * token type, and requires every claim Switchboard puts in.
 */

/** File in DATA_DIR holding the generated signing key (base64url text) outside production. */
export const SIGNING_KEY_FILE = "auth-signing.key";

/** Shortest acceptable HMAC key: as long as the SHA-256 output (RFC 7518 §3.2). */
export const MIN_SIGNING_KEY_BYTES = 32;

/** The JOSE `typ` of Switchboard access tokens (RFC 9068), checked on verify. */
export const ACCESS_TOKEN_TYPE = "at+jwt";

/** Tokens longer than this are refused before any parsing. */
const MAX_TOKEN_LENGTH = 8192;

const ALGORITHM = "HS256";

/** Default leeway for `exp`, `iat` and `nbf` between servers' clocks, in seconds. */
export const CLOCK_TOLERANCE_SECONDS = 5;

/** Options for {@link loadSigningKey}. */
export interface LoadSigningKeyOptions {
  /** AUTH_SIGNING_KEY, decoded; used as is when given. */
  readonly configured: Buffer | undefined;
  /** DATA_DIR: where a generated key is kept. */
  readonly dataDir: string;
  readonly env: "development" | "production" | "test";
}

/**
 * The access-token signing key. The configured key when there is one;
 * otherwise (never in production, where every instance must share one
 * configured key) the key stored in `DATA_DIR/auth-signing.key`, generated
 * on first use (32 random bytes, written base64url with mode 0600 into a
 * DATA_DIR created 0700 if missing, so the
 * value can be copied into AUTH_SIGNING_KEY later). Tokens therefore survive
 * restarts. Concurrent first starts agree on one key: the file appears
 * atomically and only once.
 */
export async function loadSigningKey(options: LoadSigningKeyOptions): Promise<Uint8Array> {
  if (options.configured !== undefined) {
    if (options.configured.length < MIN_SIGNING_KEY_BYTES) {
      throw new Error(
        `the access-token signing key must be at least ${MIN_SIGNING_KEY_BYTES} bytes`,
      );
    }
    return new Uint8Array(options.configured);
  }
  if (options.env === "production") {
    throw new Error("AUTH_SIGNING_KEY is required in production");
  }
  const file = join(options.dataDir, SIGNING_KEY_FILE);
  const existing = await readKeyFile(file);
  if (existing !== undefined) {
    return existing;
  }
  await ensurePrivateDir(options.dataDir);
  // Write a private temporary file in full, then hard-link it into place:
  // link() never replaces an existing file, so a concurrent start that got
  // there first wins and everyone reads its key; nobody sees a partial file.
  const temp = join(options.dataDir, `.${SIGNING_KEY_FILE}.${process.pid}.${randomUUID()}`);
  await writeFile(temp, `${randomBytes(MIN_SIGNING_KEY_BYTES).toString("base64url")}\n`, {
    mode: 0o600,
    flag: "wx",
  });
  try {
    await link(temp, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
      throw error;
    }
  } finally {
    await rm(temp, { force: true });
  }
  const stored = await readKeyFile(file);
  if (stored === undefined) {
    throw new Error(`${file} vanished while it was being created`);
  }
  return stored;
}

/** The key in `file`, or undefined if there is no such file. Throws if it is unusable. */
async function readKeyFile(file: string): Promise<Uint8Array | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      return undefined;
    }
    throw error;
  }
  const key = Buffer.from(text.trim(), "base64url");
  if (key.length < MIN_SIGNING_KEY_BYTES) {
    // Regenerating silently would hide whatever damaged the file.
    throw new Error(
      `${file} does not hold a base64url key of at least ${MIN_SIGNING_KEY_BYTES} bytes; delete it to generate a new one`,
    );
  }
  return new Uint8Array(key);
}

/** Options for {@link createTokenService}. */
export interface TokenServiceOptions {
  /** HMAC key, at least 32 bytes (see {@link loadSigningKey}). */
  readonly key: Uint8Array;
  /** Lifetime of an access token. */
  readonly accessTtlSeconds: number;
  /** `iss` written and required. Default "switchboard". */
  readonly issuer?: string;
  /** `aud` written and required. Default "switchboard-api". */
  readonly audience?: string;
  /** Leeway for `exp`, `iat` and `nbf` between servers' clocks. Default 5. */
  readonly clockToleranceSeconds?: number;
  /** The current time; tests move it. */
  readonly now?: () => Date;
  /** Verified tokens remembered until they expire (LRU beyond this many). Default 10,000. */
  readonly verifiedCacheSize?: number;
}

/** What an access token says about its bearer. */
export interface AccessTokenClaims {
  readonly userId: string;
  readonly username: string;
  readonly roles: readonly string[];
  /** The refresh-token session the token is issued for. */
  readonly sessionId: string;
  /** The login (session family) of that session, written as `fid`; revoked as a whole. */
  readonly familyId?: string;
}

/** A signed access token and when it stops being accepted. */
export interface IssuedAccessToken {
  readonly token: string;
  /** `exp` as a Date (whole seconds). */
  readonly expireTime: Date;
}

/** Issues and verifies access tokens. */
export interface TokenService {
  issueAccessToken(claims: AccessTokenClaims): Promise<IssuedAccessToken>;
  /**
   * The caller a token identifies. Rejects with Unauthenticated carrying a
   * `google.rpc.ErrorInfo`: reason TOKEN_EXPIRED for a genuine token past
   * `exp` (plus tolerance), TOKEN_INVALID for anything else (bad signature,
   * `iat` later than now plus the tolerance,
   * wrong algorithm, issuer, audience or type, missing or mistyped claims,
   * not a JWT at all). The library's error is kept as `cause` only.
   */
  verifyAccessToken(token: string): Promise<AuthInfo>;
}

/** Builds the token service over one HS256 key. */
export function createTokenService(options: TokenServiceOptions): TokenService {
  const {
    key,
    accessTtlSeconds,
    issuer = "switchboard",
    audience = "switchboard-api",
    clockToleranceSeconds = CLOCK_TOLERANCE_SECONDS,
    now = () => new Date(),
    verifiedCacheSize = 10_000,
  } = options;
  if (key.length < MIN_SIGNING_KEY_BYTES) {
    throw new RangeError(`the signing key must be at least ${MIN_SIGNING_KEY_BYTES} bytes`);
  }
  if (!Number.isSafeInteger(accessTtlSeconds) || accessTtlSeconds <= 0) {
    throw new RangeError("accessTtlSeconds must be a positive integer");
  }

  // A token is immutable and the key never changes in a process, so a
  // signature that verified once verifies forever: remember the result and
  // re-check only the time-bound claims, exactly as jose checks them
  // (`exp <= now - tolerance` is expired, `nbf > now + tolerance` is not
  // yet valid). This takes an HMAC, a WebCrypto key import and the JSON
  // parsing off every call a client makes with the same token.
  const verified = new LRUCache<string, { info: AuthInfo; exp: number; nbf: number | undefined }>({
    max: verifiedCacheSize,
  });
  const stillValid = (entry: { exp: number; nbf: number | undefined }) => {
    const t = Math.floor(now().getTime() / 1000);
    return (
      entry.exp > t - clockToleranceSeconds &&
      !(entry.nbf !== undefined && entry.nbf > t + clockToleranceSeconds)
    );
  };

  const invalid = (cause?: unknown) =>
    unauthenticated(Reason.TOKEN_INVALID, "access token is invalid", cause);

  return {
    async issueAccessToken(claims) {
      const issuedAt = Math.floor(now().getTime() / 1000);
      const expiresAt = issuedAt + accessTtlSeconds;
      const token = await new SignJWT({
        name: claims.username,
        roles: [...claims.roles],
        sid: claims.sessionId,
        ...(claims.familyId === undefined ? {} : { fid: claims.familyId }),
      })
        .setProtectedHeader({ alg: ALGORITHM, typ: ACCESS_TOKEN_TYPE })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject(claims.userId)
        .setIssuedAt(issuedAt)
        .setExpirationTime(expiresAt)
        .setJti(randomUUID())
        .sign(key);
      return { token, expireTime: new Date(expiresAt * 1000) };
    },

    async verifyAccessToken(token) {
      if (typeof token !== "string" || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
        throw invalid();
      }
      const cached = verified.get(token);
      if (cached !== undefined) {
        if (stillValid(cached)) return cached.info;
        // Expired (or, with a moved clock, not yet valid): jose says which.
        verified.delete(token);
      }
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, key, {
          algorithms: [ALGORITHM],
          issuer,
          audience,
          typ: ACCESS_TOKEN_TYPE,
          clockTolerance: clockToleranceSeconds,
          currentDate: now(),
          requiredClaims: ["sub", "iat", "exp", "jti"],
        }));
      } catch (error) {
        // jose checks the signature before any claim, so only a genuine
        // token can be reported as expired.
        if (error instanceof errors.JWTExpired) {
          throw unauthenticated(Reason.TOKEN_EXPIRED, "access token has expired", error);
        }
        throw invalid(error);
      }
      const { sub, name, roles, sid, fid, iat } = payload;
      // jose checks `iat` only against a maximum age: a token issued later
      // than any clock difference explains was not issued by us.
      if (
        typeof iat !== "number" ||
        iat > Math.floor(now().getTime() / 1000) + clockToleranceSeconds
      ) {
        throw invalid(new Error("access token is issued in the future"));
      }
      if (
        (fid !== undefined && (typeof fid !== "string" || fid === "")) ||
        typeof sub !== "string" ||
        sub === "" ||
        typeof name !== "string" ||
        typeof sid !== "string" ||
        sid === "" ||
        !Array.isArray(roles) ||
        !roles.every((r): r is string => typeof r === "string")
      ) {
        throw invalid(new Error("access token claims are missing or mistyped"));
      }
      const info: AuthInfo = Object.freeze({
        userId: sub,
        username: name,
        roles: Object.freeze([...roles]),
        sessionId: sid,
        ...(typeof fid === "string" ? { familyId: fid } : {}),
      });
      // requiredClaims makes jose check that exp is present and numeric.
      verified.set(token, { info, exp: payload.exp as number, nbf: payload.nbf });
      return info;
    },
  };
}
