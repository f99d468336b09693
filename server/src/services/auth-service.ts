import { randomBytes } from "node:crypto";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { v7 as uuidv7 } from "uuid";
import type { AuthService, LoginResponse } from "../../../gen/switchboard/auth/v1/auth_pb.js";
import {
  createLoginThrottle,
  DEFAULT_LOGIN_THROTTLE,
  type LoginThrottle,
} from "../auth/login-throttle.js";
import { hashPassword as defaultHashPassword } from "../auth/passwords.js";
import { hashRefreshToken, newRefreshToken } from "../auth/refresh-tokens.js";
import type { RevokedSessions } from "../auth/revoked-sessions.js";
import { openSuccessor, sealSuccessor } from "../auth/successor-box.js";
import type { TokenService } from "../auth/tokens.js";
import { kAuth, kLogger, kPeer, type Peer } from "../context.js";
import { permissionDenied, Reason, unauthenticated } from "../errors.js";
import type { NewSession, SessionRecord, Store, UserRecord } from "../storage/store.js";
import { toUser } from "./user-service.js";

/**
 * AuthService: Login, Refresh (rotating, single-use refresh tokens with reuse
 * detection) and Logout.
 *
 * Sessions and families: Login starts a family; every Refresh revokes the
 * presented session (recording its successor in `replaced_by`) and creates
 * the successor in the same family, with a fresh expiry (a sliding window: a
 * family lives as long as it is refreshed within REFRESH_TOKEN_TTL_SECONDS).
 * Presenting a rotated token again means two parties hold the chain, so the
 * whole family is revoked — except for a retry: within
 * {@link REFRESH_RETRY_GRACE_SECONDS} of its rotation, while its successor is
 * still the family's live, unused session, the rotated token gets the same
 * successor refresh token again (with a fresh access token for the same
 * session), so a refresh whose answer was lost, or two tabs refreshing at
 * once, cost nothing. The successor is kept sealed under the old token (see
 * auth/successor-box.ts).
 *
 * Logout decisions: the caller must be authenticated (access token) and the
 * refresh token must be one of the caller's own sessions; an unknown token
 * and another user's token both fail the same way, PermissionDenied with
 * reason REFRESH_TOKEN_INVALID, and another user's session is left alone.
 * Logout revokes only the presented session, not its family: a live session
 * is the only live member of its family anyway, and presenting an older
 * (already rotated) token of one's own is answered as an idempotent success
 * without touching the family. Logout and theft detection also revoke the
 * login's access tokens at once (`revokedSessions`, checked by the auth
 * interceptor on every call): access tokens carry their session family.
 */

/** What the AuthService needs; tests hand in real in-memory ones. */
export interface AuthServiceDeps {
  readonly store: Store;
  readonly tokens: TokenService;
  readonly logger: Logger;
  /** Lifetime of a refresh token (and of a family between two refreshes). */
  readonly refreshTtlSeconds: number;
  /** Checks a password against a stored PHC string (`verifyPassword` from auth/passwords.ts). */
  readonly verifyPassword: (phc: string, password: string) => Promise<boolean>;
  /** The retry window (REFRESH_RETRY_GRACE_SECONDS); default 30, 0 turns retries off. */
  readonly refreshRetryGraceSeconds?: number;
  /** Where Logout and theft detection revoke access tokens (the auth interceptor checks it). */
  readonly revokedSessions?: RevokedSessions;
  /**
   * Hashes the random dummy password that Login verifies against when no
   * user matches, so both failures cost the same. Must produce hashes like
   * the stored ones; default: `hashPassword` from auth/passwords.ts.
   */
  readonly hashPassword?: (password: string) => Promise<string>;
  /**
   * Decides, before any password check, whether a login attempt may be
   * evaluated (per account, account+IP and IP failure limits); default: an
   * in-memory throttle with the default limits.
   */
  readonly loginThrottle?: LoginThrottle;
  readonly clock?: () => Date;
  readonly newId?: () => string;
}

/** Default of how long after a rotation the rotated token may be presented again as a retry. */
export const REFRESH_RETRY_GRACE_SECONDS = 30;

/** Longest user agent stored with a session. */
const MAX_USER_AGENT_LENGTH = 512;

/** The one answer to every failed login, whatever went wrong. */
function invalidCredentials() {
  return unauthenticated(Reason.INVALID_CREDENTIALS, "invalid username or password");
}

function refreshTokenInvalid() {
  return unauthenticated(Reason.REFRESH_TOKEN_INVALID, "refresh token is invalid");
}

/** Builds the AuthService implementation. */
export function createAuthService(deps: AuthServiceDeps): ServiceImpl<typeof AuthService> {
  const { store, tokens, refreshTtlSeconds } = deps;
  const clock = deps.clock ?? (() => new Date());
  const newId = deps.newId ?? uuidv7;
  const throttle =
    deps.loginThrottle ??
    createLoginThrottle({ limits: DEFAULT_LOGIN_THROTTLE, logger: deps.logger });
  const graceSeconds = deps.refreshRetryGraceSeconds ?? REFRESH_RETRY_GRACE_SECONDS;
  // 0 means no retries at all, not "the same millisecond".
  const graceMs = graceSeconds > 0 ? graceSeconds * 1000 : -1;
  if (!Number.isSafeInteger(refreshTtlSeconds) || refreshTtlSeconds <= 0) {
    throw new RangeError("refreshTtlSeconds must be a positive integer");
  }

  // Computed once, now (at start-up), off the event loop. Awaited only when
  // a login names no user; a failure then surfaces as Internal.
  const dummyHash = (deps.hashPassword ?? defaultHashPassword)(
    randomBytes(24).toString("base64url"),
  );
  dummyHash.catch((err: unknown) => {
    deps.logger.error({ err }, "AuthService: cannot hash the dummy password");
  });

  const loggerFor = (context: HandlerContext): Logger =>
    context.values.get(kLogger)?.logger ?? deps.logger;

  /** Verifies, treating a hash the library cannot read as a mismatch (and logging it). */
  const verify = async (
    phc: string,
    password: string,
    log: Logger,
    userId?: string,
  ): Promise<boolean> => {
    try {
      return await deps.verifyPassword(phc, password);
    } catch (err) {
      log.error({ err, userId }, "AuthService: stored password hash cannot be verified");
      return false;
    }
  };

  const newSession = (
    user: UserRecord,
    familyId: string,
    peer: Peer,
    refreshToken: string,
    now: Date,
  ): NewSession => ({
    id: newId(),
    familyId,
    userId: user.id,
    refreshTokenHash: hashRefreshToken(refreshToken),
    userAgent: peer.userAgent.slice(0, MAX_USER_AGENT_LENGTH),
    clientIp: peer.ip,
    createTime: now,
    expireTime: new Date(now.getTime() + refreshTtlSeconds * 1000),
  });

  /** The response of Login and Refresh (both have the same fields). */
  const tokenPair = async (
    user: UserRecord,
    session: Pick<NewSession, "id" | "familyId" | "expireTime">,
    refreshToken: string,
  ): Promise<Omit<LoginResponse, "$typeName" | "$unknown">> => {
    const access = await tokens.issueAccessToken({
      userId: user.id,
      username: user.username,
      roles: [user.role],
      sessionId: session.id,
      familyId: session.familyId,
    });
    return {
      accessToken: access.token,
      accessTokenExpireTime: timestampFromDate(access.expireTime),
      refreshToken,
      refreshTokenExpireTime: timestampFromDate(session.expireTime),
      // The caller's own record: private fields included.
      user: toUser(user, "private"),
    };
  };

  /**
   * A rotated refresh token came back (or a concurrent refresh of the same
   * token won): revoke the whole family and refuse. The revocation ignores
   * the call's signal, so a client hanging up cannot stop it.
   */
  const reuseDetected = async (
    session: SessionRecord,
    now: Date,
    log: Logger,
    peer: Peer,
  ): Promise<never> => {
    const revoked = await store.revokeSessionFamily(session.familyId, now);
    await deps.revokedSessions?.revoke([session.familyId]);
    log.warn(
      {
        userId: session.userId,
        sessionId: session.id,
        familyId: session.familyId,
        revoked,
        clientIp: peer.ip,
      },
      "refresh token reused: session family revoked",
    );
    throw unauthenticated(
      Reason.REFRESH_TOKEN_REUSED,
      "refresh token was already used; all sessions of this login are revoked",
    );
  };

  /**
   * The answer to a rotated token presented again, if it is a retry: within
   * the grace window, and its successor is still live (not itself rotated,
   * logged out or revoked with its family). Undefined otherwise.
   */
  const retryAnswer = async (
    rotated: SessionRecord,
    refreshToken: string,
    now: Date,
    signal: AbortSignal,
  ) => {
    if (rotated.revokeTime === undefined || rotated.successorTokenBox === undefined) return;
    if (now.getTime() - rotated.revokeTime.getTime() > graceMs) return;
    const successorToken = openSuccessor(rotated.successorTokenBox, refreshToken);
    if (successorToken === undefined) return;
    const successor = await store.findSessionByTokenHash(hashRefreshToken(successorToken), {
      signal,
    });
    if (
      successor === undefined ||
      successor.id !== rotated.replacedBy ||
      successor.familyId !== rotated.familyId ||
      successor.revokeTime !== undefined ||
      successor.expireTime.getTime() <= now.getTime()
    ) {
      return;
    }
    const user = await store.getUser(successor.userId, { signal });
    if (user === undefined) return;
    return tokenPair(user, successor, successorToken);
  };

  return {
    async login(req, context) {
      // Requests arrive validated (validation/request-rules.ts).
      const { username: login, password } = req;
      const log = loggerFor(context);
      const peer = context.values.get(kPeer);
      const user = await store.findUserByLogin(login, { signal: context.signal });
      // Before any password check. Every name of an account counts against
      // it; a login naming no user is throttled just the same, by name.
      const normalised = login.toLowerCase();
      const admitted = await throttle.admit({
        account: user === undefined ? `login:${normalised}` : `user:${user.id}`,
        login: normalised,
        ip: peer.ip,
      });
      // One argon2 verification either way, so timing does not tell an
      // unknown user from a wrong password.
      const ok =
        user === undefined
          ? await verify(await dummyHash, password, log).then(() => false)
          : await verify(user.passwordHash, password, log, user.id);
      if (user === undefined || !ok) {
        await admitted.failed();
        log.info({ userId: user?.id, clientIp: peer.ip }, "login failed");
        throw invalidCredentials();
      }
      await admitted.succeeded();
      context.signal.throwIfAborted();
      const now = clock();
      const refreshToken = newRefreshToken();
      const session = newSession(user, newId(), peer, refreshToken, now);
      await store.createSession(session, { signal: context.signal });
      log.info({ userId: user.id, sessionId: session.id, clientIp: peer.ip }, "login");
      return tokenPair(user, session, refreshToken);
    },

    async refresh(req, context) {
      const { refreshToken } = req;
      const log = loggerFor(context);
      const peer = context.values.get(kPeer);
      const signal = context.signal;
      const now = clock();
      const session = await store.findSessionByTokenHash(hashRefreshToken(refreshToken), {
        signal,
      });
      if (session === undefined) {
        throw refreshTokenInvalid();
      }
      if (session.revokeTime !== undefined) {
        if (session.replacedBy !== undefined) {
          const retried = await retryAnswer(session, refreshToken, now, signal);
          if (retried !== undefined) return retried;
          await reuseDetected(session, now, log, peer);
        }
        // Ended by Logout, or by revoking its family.
        throw refreshTokenInvalid();
      }
      if (session.expireTime.getTime() <= now.getTime()) {
        throw unauthenticated(Reason.REFRESH_TOKEN_EXPIRED, "refresh token has expired");
      }
      // Re-read, so a promotion (or any change) shows in the new token.
      const user = await store.getUser(session.userId, { signal });
      if (user === undefined) {
        // Sessions are deleted with their user; this only happens mid-delete.
        throw refreshTokenInvalid();
      }
      const nextToken = newRefreshToken();
      const next = newSession(user, session.familyId, peer, nextToken, now);
      const successorTokenBox = sealSuccessor(nextToken, refreshToken);
      if (!(await store.rotateSession(session.id, next, { signal, successorTokenBox }))) {
        // Someone else rotated (or revoked) it between our read and now: a
        // concurrent refresh of the same token gets the same answer.
        const current = await store.findSessionByTokenHash(session.refreshTokenHash, { signal });
        const retried =
          current === undefined
            ? undefined
            : await retryAnswer(current, refreshToken, clock(), signal);
        if (retried !== undefined) return retried;
        await reuseDetected(session, now, log, peer);
      }
      return tokenPair(user, next, nextToken);
    },

    async logout(req, context) {
      const auth = context.values.get(kAuth);
      if (auth === undefined) {
        throw unauthenticated(Reason.TOKEN_MISSING, "this call requires an access token");
      }
      const { refreshToken } = req;
      const log = loggerFor(context);
      const session = await store.findSessionByTokenHash(hashRefreshToken(refreshToken), {
        signal: context.signal,
      });
      if (session === undefined || session.userId !== auth.userId) {
        if (session !== undefined) {
          log.warn(
            { userId: auth.userId, sessionId: session.id, sessionUserId: session.userId },
            "logout with another user's refresh token refused",
          );
        }
        throw permissionDenied(
          Reason.REFRESH_TOKEN_INVALID,
          "the refresh token is not one of the caller's sessions",
        );
      }
      const revoked = await store.revokeSession(session.id, clock(), { signal: context.signal });
      // Every access token of this login, including those of its rotated
      // predecessors, ends now too.
      await deps.revokedSessions?.revoke([session.familyId, session.id]);
      log.info({ userId: auth.userId, sessionId: session.id, revoked }, "logout");
      return {};
    },
  };
}
