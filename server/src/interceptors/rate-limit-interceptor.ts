import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ContextValues, type Interceptor } from "@connectrpc/connect";
import type { Redis } from "ioredis";
import {
  RateLimiterMemory,
  RateLimiterRedis,
  RateLimiterRes,
  RLWrapperTimeouts,
} from "rate-limiter-flexible";
import {
  QuotaFailure_ViolationSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../../../gen/google/rpc/error_details_pb.js";
import type { Config, RateLimit } from "../config.js";
import { kAuth, kLogger, kPeer } from "../context.js";
import { procedureOf } from "./procedure.js";

/** Procedures with a stricter per-IP limit on top of the public one. */
export const LOGIN_PROCEDURE = "switchboard.auth.v1.AuthService/Login";
export const REGISTER_PROCEDURE = "switchboard.user.v1.UserService/RegisterUser";

export interface RateLimitOptions {
  readonly limits: Config["rateLimits"];
  /**
   * Shares the counts between every server process through Redis. Without
   * it each process counts on its own (in memory).
   */
  readonly redis?: Redis;
  /** Prefix of every Redis key (and in-memory key); default `switchboard:rl`. */
  readonly keyPrefix?: string;
  /**
   * How long a Redis round trip may take before the call is counted in
   * memory instead (a Redis that accepts connections but does not answer);
   * default 250 ms.
   */
  readonly redisTimeoutMs?: number;
}

/** A limiter as far as this module uses one. */
interface Limiter {
  consume(key: string): Promise<RateLimiterRes>;
}

/** A limit that applies to a call, and the key it counts the call under. */
type Check = readonly [Limit, string];

/** One limit that may apply to a call. */
interface Limit {
  readonly limiter: Limiter;
  /** With the key, the QuotaFailure subject, e.g. `ip:` + `203.0.113.7`. */
  readonly prefix: string;
  readonly description: string;
}

/**
 * ResourceExhausted for a call over its rate limit, with a
 * `google.rpc.QuotaFailure` naming the exhausted limit and a
 * `google.rpc.RetryInfo` saying when to retry.
 */
export function rateLimited(
  subject: string,
  description: string,
  retryAfterMs: number,
): ConnectError {
  const retryMs = Math.max(0, Math.ceil(retryAfterMs));
  return new ConnectError(
    `rate limit exceeded (${description}); retry in ${Math.ceil(retryMs / 1000)} s`,
    Code.ResourceExhausted,
    undefined,
    [
      {
        desc: QuotaFailureSchema,
        value: create(QuotaFailureSchema, {
          violations: [create(QuotaFailure_ViolationSchema, { subject, description })],
        }),
      },
      {
        desc: RetryInfoSchema,
        value: create(RetryInfoSchema, { retryDelay: durationFromMs(retryMs) }),
      },
    ],
  );
}

/**
 * Rate limits per caller, checked once per call (a stream counts once, when
 * it opens). Auth must run before (outside) this interceptor:
 * - authenticated calls (`kAuth` set): per user id, `limits.user`;
 * - public calls: per client IP (`kPeer.ip`), `limits.public`;
 * - additionally, whoever calls: `AuthService/Login` per IP with
 *   `limits.login` and `UserService/RegisterUser` per IP with
 *   `limits.register`.
 * A call over any of its limits fails with ResourceExhausted (see
 * `rateLimited`); the retry delay is the longest of the exceeded limits.
 * Every applicable limit is counted, even when another one rejects.
 *
 * Without `redis` the counts live in this process's memory. With `redis`
 * they live in Redis (fixed windows, atomic Lua increments), shared by every
 * process using the same `keyPrefix`. If Redis is unreachable (the client
 * is not "ready") or does not answer within `redisTimeoutMs`, the call is
 * counted by an in-memory insurance limiter with the same limits instead:
 * an outage degrades to per-process limiting (N processes then allow up to
 * N times the limit) rather than failing calls. Should even that fail, the
 * call is allowed and a warning is logged: the limiter is never a reason for
 * an outage.
 *
 * Nothing to close: in-memory timers do not keep the process alive and the
 * Redis client belongs to the caller.
 */
export function rateLimitInterceptor(options: RateLimitOptions): Interceptor {
  const prefix = options.keyPrefix ?? "switchboard:rl";
  const make = (name: string, limit: RateLimit): Limiter => {
    const base = { points: limit.points, duration: limit.durationSeconds };
    const memory = new RateLimiterMemory({ ...base, keyPrefix: `${prefix}:${name}` });
    if (!options.redis) return memory;
    const redis = new RateLimiterRedis({
      ...base,
      keyPrefix: `${prefix}:${name}`,
      storeClient: options.redis,
      // ioredis, not node-redis.
      useRedisPackage: false,
      // Go to the insurance limiter at once while disconnected, instead of
      // waiting in ioredis's offline queue.
      rejectIfRedisNotReady: true,
      insuranceLimiter: memory,
    });
    return new RLWrapperTimeouts({
      limiter: redis,
      timeoutMs: options.redisTimeoutMs ?? 250,
      insuranceLimiter: memory,
    });
  };
  const { limits } = options;
  const user = make("user", limits.user);
  const publicIp = make("public", limits.public);
  const login = make("login", limits.login);
  const register = make("register", limits.register);

  // Built once: only the key and the QuotaFailure subject depend on the call.
  const per: Record<"user" | "public" | "login" | "register", Limit> = {
    user: {
      limiter: user,
      prefix: "user:",
      description: describe(limits.user, "calls", "per user"),
    },
    public: {
      limiter: publicIp,
      prefix: "ip:",
      description: describe(limits.public, "calls", "per client IP"),
    },
    login: {
      limiter: login,
      prefix: "login:ip:",
      description: describe(limits.login, "logins", "per client IP"),
    },
    register: {
      limiter: register,
      prefix: "register:ip:",
      description: describe(limits.register, "registrations", "per client IP"),
    },
  };

  /**
   * How one limiter answered: the milliseconds until it allows the call
   * again when over the limit, else undefined. A limiter failure (not a
   * rejection) lets the call through and is logged.
   */
  const overBy = (
    result: PromiseSettledResult<unknown>,
    [limit, key]: Check,
    values: ContextValues,
  ): number | undefined => {
    if (result.status === "fulfilled") return undefined;
    if (result.reason instanceof RateLimiterRes) return result.reason.msBeforeNext;
    values
      .get(kLogger)
      ?.logger.warn(
        { err: result.reason, subject: `${limit.prefix}${key}` },
        "rate limiter failed; call allowed",
      );
    return undefined;
  };

  return (next) => async (req) => {
    const procedure = procedureOf(req);
    const values = req.contextValues;
    const ip = values.get(kPeer).ip;
    const auth = values.get(kAuth);
    const checks: Check[] = [auth ? [per.user, auth.userId] : [per.public, ip]];
    if (procedure === LOGIN_PROCEDURE) checks.push([per.login, ip]);
    else if (procedure === REGISTER_PROCEDURE) checks.push([per.register, ip]);

    // Every applicable limit is counted, even when another one rejects.
    const results = await Promise.allSettled(
      checks.map(([limit, key]) => limit.limiter.consume(key)),
    );
    // The retry delay is the longest of the exceeded limits.
    let worst: { check: Check; ms: number } | undefined;
    for (const [i, check] of checks.entries()) {
      const ms = overBy(results[i] as PromiseSettledResult<unknown>, check, values);
      if (ms !== undefined && (!worst || ms > worst.ms)) worst = { check, ms };
    }
    if (worst) {
      const [limit, key] = worst.check;
      throw rateLimited(`${limit.prefix}${key}`, limit.description, worst.ms);
    }
    return next(req);
  };
}

/** E.g. "at most 10 logins per 60 s per client IP". */
function describe(limit: RateLimit, what: string, per: string): string {
  return `at most ${limit.points} ${what} per ${limit.durationSeconds} s ${per}`;
}
