import { LRUCache } from "lru-cache";
import type { AuthInfo } from "../context.js";
import { Reason, unauthenticated } from "../errors.js";
import type { VerifyAccessToken } from "../interceptors/auth-interceptor.js";
import type { RevokedSessions } from "./revoked-sessions.js";

/** Options for {@link createAccessVerifier}. */
export interface AccessVerifierOptions {
  /** The signature and claims check (TokenService.verifyAccessToken). */
  readonly verifyToken: (token: string) => Promise<AuthInfo>;
  readonly revoked: RevokedSessions;
  /** Whether a user with this id exists (the store). */
  readonly userExists: (userId: string) => Promise<boolean>;
  /** How long a user found to exist is not looked up again. Default 30 s. */
  readonly knownUserTtlMs?: number;
}

/**
 * What the auth interceptor checks a bearer token with: a genuine, unexpired
 * token (TokenService), whose session and login (family) were not revoked
 * (TOKEN_REVOKED: Logout, refresh-token theft), for a user that exists
 * (TOKEN_INVALID otherwise). The revocation check is in memory; existing
 * users are remembered for `knownUserTtlMs`, so the store is read about once
 * per user and period, not per call.
 */
export function createAccessVerifier(options: AccessVerifierOptions): VerifyAccessToken {
  const { verifyToken, revoked, userExists } = options;
  const known = new LRUCache<string, true>({
    max: 100_000,
    ttl: options.knownUserTtlMs ?? 30_000,
  });
  return async (token) => {
    const auth = await verifyToken(token);
    if (
      revoked.has(auth.sessionId) ||
      (auth.familyId !== undefined && revoked.has(auth.familyId))
    ) {
      throw unauthenticated(Reason.TOKEN_REVOKED, "the session of this access token has ended");
    }
    if (!known.has(auth.userId)) {
      if (!(await userExists(auth.userId))) {
        throw unauthenticated(Reason.TOKEN_INVALID, "access token is invalid");
      }
      known.set(auth.userId, true);
    }
    return auth;
  };
}
