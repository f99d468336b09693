import type { Redis } from "ioredis";
import type { Logger } from "pino";
import {
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
  RLWrapperTimeouts,
} from "rate-limiter-flexible";
import type { RateLimit } from "../config.js";
import { rateLimited } from "../interceptors/rate-limit-interceptor.js";

/**
 * Login throttling, after rate-limiter-flexible's "Login endpoint
 * protection" pattern (`limiterSlowBruteByIP` +
 * `limiterConsecutiveFailsByUsernameAndIP`, reset on success), with a
 * growing lockout ("Dynamic block duration") and a per-account limit that
 * spares the IPs the account logged in from before, so an attacker cannot
 * lock the real user out of their usual device or network:
 *
 * - per client IP: at most `failsPerIp` failures per window, any account;
 * - per account and client IP: after `consecutiveFailsPerAccountAndIp`
 *   consecutive failures, a lockout of `lockoutSeconds`, doubled with each
 *   further lockout up to `maxLockoutSeconds`; a success clears both;
 * - per account: at most `failsPerAccount` failures per window from client
 *   IPs without a successful login for that account within
 *   {@link REMEMBER_SECONDS}; those IPs are then refused until the window
 *   ends, while known IPs still get in.
 *
 * An attempt is counted as a failure atomically before its password is
 * checked, and refunded if it succeeds (or is refused): concurrent attempts
 * cannot all slip through between a check and a count. A refused attempt
 * gets ResourceExhausted with QuotaFailure and RetryInfo (`rateLimited`),
 * and no password check.
 *
 * With Redis the counts are shared by every process (same `keyPrefix`); an
 * unreachable or slow Redis falls back to per-process memory, and a limiter
 * that fails even so admits the attempt and logs a warning.
 */

/**
 * How long consecutive failures, lockout counts and known IPs are
 * remembered: 21 days (in-memory timers cannot exceed 24.8 days).
 */
export const REMEMBER_SECONDS = 21 * 24 * 3600;

/** The login-failure limits (config `loginThrottle`). */
export interface LoginThrottleLimits {
  /** Consecutive failures per account and client IP before a lockout (LOGIN_FAILS_PER_ACCOUNT_AND_IP). */
  readonly consecutiveFailsPerAccountAndIp: number;
  /** Failures per account from client IPs it never logged in from (LOGIN_FAILS_PER_ACCOUNT). */
  readonly failsPerAccount: RateLimit;
  /** Failures per client IP, whatever the account (LOGIN_FAILS_PER_IP). */
  readonly failsPerIp: RateLimit;
  /** The first lockout of an account+IP; each further one doubles (LOGIN_LOCKOUT_SECONDS). */
  readonly lockoutSeconds: number;
  /** The longest lockout (LOGIN_LOCKOUT_MAX_SECONDS). */
  readonly maxLockoutSeconds: number;
}

/** Who is trying to log in. */
export interface LoginAttempt {
  /**
   * The account the attempt counts against: a stable key, the same for every
   * name of one account (its user id), and for a login that names no user
   * the normalised login itself, so unknown and known accounts are throttled
   * alike.
   */
  readonly account: string;
  /** The login as the caller wrote it, lower-cased: what QuotaFailure names. */
  readonly login: string;
  readonly ip: string;
}

/** An attempt let through: report how the password check went. */
export interface AdmittedLogin {
  /** The password was wrong (or no user matched). */
  failed(): Promise<void>;
  /** The password was right. */
  succeeded(): Promise<void>;
}

/** Decides whether a login attempt may have its password checked at all. */
export interface LoginThrottle {
  /**
   * Admits the attempt, or throws ResourceExhausted (QuotaFailure naming the
   * limit, RetryInfo saying when to retry) without any password check.
   */
  admit(attempt: LoginAttempt): Promise<AdmittedLogin>;
}

/** How `createLoginThrottle` counts. */
export interface LoginThrottleOptions {
  readonly limits: LoginThrottleLimits;
  /** Shares the counts between every server process; without it each counts on its own. */
  readonly redis?: Redis | undefined;
  /** Key prefix (Redis and memory); default `switchboard:login`. */
  readonly keyPrefix?: string;
  /** Redis round trip after which the in-memory limiters count instead; default 250 ms. */
  readonly redisTimeoutMs?: number;
  /** Where a failing limiter is reported (the attempt is then admitted). */
  readonly logger?: Logger | undefined;
}

/** The defaults of the LOGIN_* variables. */
export const DEFAULT_LOGIN_THROTTLE: LoginThrottleLimits = Object.freeze({
  consecutiveFailsPerAccountAndIp: 10,
  failsPerAccount: Object.freeze({ points: 100, durationSeconds: 24 * 3600 }),
  failsPerIp: Object.freeze({ points: 100, durationSeconds: 24 * 3600 }),
  lockoutSeconds: 60,
  maxLockoutSeconds: 3600,
});

/** A limiter as far as this module uses one. */
type Limiter = Pick<RateLimiterMemory, "get" | "penalty" | "reward" | "set" | "block" | "delete">;

/** Builds the login throttle: in memory, or in Redis when `redis` is given. */
export function createLoginThrottle(options: LoginThrottleOptions): LoginThrottle {
  const { limits, logger } = options;
  const prefix = options.keyPrefix ?? "switchboard:login";
  const make = (name: string, points: number, durationSeconds: number): Limiter => {
    const base = { points, duration: durationSeconds, keyPrefix: `${prefix}:${name}` };
    const memory = new RateLimiterMemory(base);
    if (!options.redis) return memory;
    const redis = new RateLimiterRedis({
      ...base,
      storeClient: options.redis,
      useRedisPackage: false,
      rejectIfRedisNotReady: true,
      insuranceLimiter: memory,
    });
    return new RLWrapperTimeouts({
      limiter: redis,
      timeoutMs: options.redisTimeoutMs ?? 250,
      insuranceLimiter: memory,
    });
  };
  const maxConsecutive = limits.consecutiveFailsPerAccountAndIp;
  const perIp = make("fails-ip", limits.failsPerIp.points, limits.failsPerIp.durationSeconds);
  const perAccount = make(
    "fails-account",
    limits.failsPerAccount.points,
    limits.failsPerAccount.durationSeconds,
  );
  const consecutive = make("fails-account-ip", maxConsecutive, REMEMBER_SECONDS);
  const lockouts = make("lockouts-account-ip", Number.MAX_SAFE_INTEGER, REMEMBER_SECONDS);
  const knownIps = make("known-account-ip", 1, REMEMBER_SECONDS);

  const ipDescription = `at most ${limits.failsPerIp.points} failed logins per ${limits.failsPerIp.durationSeconds} s per client IP`;
  const accountDescription = `at most ${limits.failsPerAccount.points} failed logins per ${limits.failsPerAccount.durationSeconds} s per account from client IPs it has not logged in from`;
  const pairDescription = `at most ${maxConsecutive} consecutive failed logins per account and client IP, then a lockout of ${limits.lockoutSeconds} s, doubling up to ${limits.maxLockoutSeconds} s`;

  /** Runs one limiter operation; a failure (not a verdict) is logged and yields undefined. */
  const safely = async <T>(what: string, op: () => Promise<T>): Promise<T | undefined> => {
    try {
      return await op();
    } catch (err) {
      const reason = err instanceof RateLimiterRes ? undefined : err;
      logger?.warn({ err: reason, what }, "login throttle failed; attempt admitted");
      return undefined;
    }
  };

  return {
    async admit(attempt) {
      const { account, ip } = attempt;
      const pairKey = JSON.stringify([account, ip]);
      const known = (await safely("known ip", () => knownIps.get(pairKey))) != null;
      // Counted as failures now, atomically; refunded below if refused or
      // if the password turns out right.
      const counted = [
        {
          limiter: perIp,
          key: ip,
          max: limits.failsPerIp.points,
          subject: `login-fails:ip:${ip}`,
          description: ipDescription,
        },
        {
          limiter: consecutive,
          key: pairKey,
          max: maxConsecutive,
          subject: `login-fails:account:${attempt.login}:ip:${ip}`,
          description: pairDescription,
        },
        ...(known
          ? []
          : [
              {
                limiter: perAccount,
                key: account,
                max: limits.failsPerAccount.points,
                subject: `login-fails:account:${attempt.login}`,
                description: accountDescription,
              },
            ]),
      ];
      const results = await Promise.all(
        counted.map((c) => safely(c.subject, () => c.limiter.penalty(c.key))),
      );
      const refund = () =>
        Promise.all(
          counted.map((c, i) =>
            results[i] ? safely(c.subject, () => c.limiter.reward(c.key)) : undefined,
          ),
        );

      let worst: { subject: string; description: string; ms: number } | undefined;
      for (const [i, c] of counted.entries()) {
        const res = results[i];
        if (res === undefined || res.consumedPoints <= c.max) continue;
        // A lockout not yet set (its failure still being checked) reads as
        // the counter's whole lifetime: the longest lockout is the honest bound.
        const ms =
          c.limiter === consecutive
            ? Math.min(res.msBeforeNext, limits.maxLockoutSeconds * 1000)
            : res.msBeforeNext;
        if (!worst || ms > worst.ms) worst = { subject: c.subject, description: c.description, ms };
      }
      if (worst) {
        await refund();
        throw rateLimited(worst.subject, worst.description, Math.ceil(worst.ms / 1000) * 1000);
      }
      const pairCount = results[1]?.consumedPoints ?? 0;

      return {
        async failed() {
          if (pairCount < maxConsecutive) return;
          const lockout = await safely("lockouts", () => lockouts.penalty(pairKey));
          const n = Math.max(1, lockout?.consumedPoints ?? 1);
          const seconds = Math.min(
            limits.lockoutSeconds * 2 ** Math.min(n - 1, 30),
            limits.maxLockoutSeconds,
          );
          await safely("lockout", () => consecutive.block(pairKey, seconds));
        },
        async succeeded() {
          await Promise.all([
            refund(),
            safely("reset", () => consecutive.delete(pairKey)),
            safely("reset lockouts", () => lockouts.delete(pairKey)),
            safely("remember ip", () => knownIps.set(pairKey, 1, REMEMBER_SECONDS)),
          ]);
        },
      };
    },
  };
}
