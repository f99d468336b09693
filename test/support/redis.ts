import { Redis } from "ioredis";
import { describe, it } from "vitest";

/**
 * Shared by the Redis tests (chat bus and presence, rate limits): where the test Redis is,
 * whether it answers, and the CI rule (skipped loudly when absent, required
 * under CI=true).
 */

export const TEST_REDIS = { host: "127.0.0.1", port: 6379 } as const;
export const TEST_REDIS_URL = `redis://${TEST_REDIS.host}:${TEST_REDIS.port}`;
const IN_CI = process.env.CI === "true";

/** Whether Redis answers at TEST_REDIS within a second. */
export async function redisReachable(): Promise<boolean> {
  const probe = new Redis({
    ...TEST_REDIS,
    lazyConnect: true,
    connectTimeout: 1000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on("error", () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === "PONG";
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/**
 * Probes Redis; when it is absent, warns loudly (and, under CI=true, adds a
 * failing test named after `suite`). Returns whether the suite can run.
 */
export async function requireRedis(suite: string): Promise<boolean> {
  const up = await redisReachable();
  if (!up && !IN_CI) {
    console.warn(
      `\n!!! Redis is not reachable at ${TEST_REDIS_URL}: the ${suite} tests are SKIPPED.\n` +
        "!!! Start Redis to run them; under CI=true they fail instead.\n",
    );
  }
  if (!up && IN_CI) {
    describe(suite, () => {
      it("needs Redis under CI=true", () => {
        throw new Error(`Redis is required under CI=true but not reachable at ${TEST_REDIS_URL}`);
      });
    });
  }
  return up;
}

/** Polls `check` until it returns true, or throws after `timeoutMs`. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
  what = "condition",
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) {
      return;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Deletes every key starting with `prefix` (SCAN, not KEYS). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${escapeGlob(prefix)}*`, "COUNT", 500);
    cursor = next;
    if (keys.length > 0) {
      await redis.del(...keys);
    }
  } while (cursor !== "0");
}

function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, (c) => `\\${c}`);
}
