import type { Redis } from "ioredis";

/** The logging surface needed; a pino logger satisfies it. */
export interface AvailabilityLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/**
 * Logs once when `redis` is lost and once when it is back. Redis is not
 * required: while it is away rate limits fall back to per-process memory,
 * chat fan-out across instances and shared presence pause (the store still
 * serves history and sends), and WatchUsers relies on its catch-up query —
 * so health stays SERVING and this line is how the degradation shows.
 */
export function logRedisAvailability(redis: Redis, logger: AvailabilityLogger): void {
  let wasReady = false;
  let lost = false;
  redis.on("close", () => {
    if (!wasReady || lost) return;
    lost = true;
    logger.warn(
      { dependency: "redis", degraded: true },
      "Redis unavailable: degraded (per-process rate limits, cross-instance chat fan-out and presence paused); health stays SERVING",
    );
  });
  redis.on("ready", () => {
    if (lost) {
      logger.info({ dependency: "redis", degraded: false }, "Redis available again");
    }
    wasReady = true;
    lost = false;
  });
}
