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
 * Counts one chat message sent by `userId` (Send, or a message frame of the
 * bidi Chat call). Resolves when the message is within the limit; rejects
 * with ResourceExhausted (QuotaFailure subject `chat:user:<id>` + RetryInfo,
 * see `rateLimited`) when it is over.
 */
export type ChatLimiter = (userId: string) => Promise<void>;

export interface ChatLimiterOptions {
  /** config `rateLimits.chat`. */
  readonly limit: RateLimit;
  /** Shares the counts between processes; without it each process counts on its own. */
  readonly redis?: Redis | undefined;
  /** Key prefix (Redis and memory); default `switchboard:rl:chat`. */
  readonly keyPrefix?: string;
  /** Redis round trip after which the in-memory limiter counts instead; default 250 ms. */
  readonly redisTimeoutMs?: number;
  /** Where a failing limiter is reported (the message is then allowed). */
  readonly logger?: Logger;
}

/**
 * The chat's per-user message limit, with the same memory/Redis behaviour as
 * the rate-limit interceptor: with Redis, counts are shared (fixed windows),
 * and while Redis is unreachable or slow an in-memory limiter with the same
 * limit counts instead; should even that fail, the message is allowed and a
 * warning logged (the limiter is never a reason for an outage).
 */
export function createChatLimiter(options: ChatLimiterOptions): ChatLimiter {
  const { limit } = options;
  const keyPrefix = options.keyPrefix ?? "switchboard:rl:chat";
  const base = { points: limit.points, duration: limit.durationSeconds, keyPrefix };
  const memory = new RateLimiterMemory(base);
  let limiter: { consume(key: string): Promise<RateLimiterRes> } = memory;
  if (options.redis) {
    const redis = new RateLimiterRedis({
      ...base,
      storeClient: options.redis,
      useRedisPackage: false,
      rejectIfRedisNotReady: true,
      insuranceLimiter: memory,
    });
    limiter = new RLWrapperTimeouts({
      limiter: redis,
      timeoutMs: options.redisTimeoutMs ?? 250,
      insuranceLimiter: memory,
    });
  }
  const description = `at most ${limit.points} messages per ${limit.durationSeconds} s per user`;

  return async (userId) => {
    try {
      await limiter.consume(userId);
    } catch (err) {
      if (err instanceof RateLimiterRes) {
        throw rateLimited(`chat:user:${userId}`, description, err.msBeforeNext);
      }
      options.logger?.warn({ err, userId }, "chat rate limiter failed; message allowed");
    }
  };
}
