import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { QuotaFailureSchema, RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { deleteKeys, requireRedis, TEST_REDIS } from "../../../test/support/redis.js";
import {
  createLoginThrottle,
  type LoginAttempt,
  type LoginThrottle,
  type LoginThrottleLimits,
} from "./login-throttle.js";

const limits: LoginThrottleLimits = {
  consecutiveFailsPerAccountAndIp: 2,
  failsPerAccount: { points: 3, durationSeconds: 3600 },
  failsPerIp: { points: 100, durationSeconds: 3600 },
  lockoutSeconds: 60,
  maxLockoutSeconds: 200,
};

const ada = (ip: string): LoginAttempt => ({ account: "user:1", login: "ada", ip });

/** "admitted", or the refusal's QuotaFailure subject and RetryInfo seconds. */
async function verdict(throttle: LoginThrottle, attempt: LoginAttempt, outcome?: "ok" | "fail") {
  try {
    const admitted = await throttle.admit(attempt);
    if (outcome === "ok") await admitted.succeeded();
    if (outcome === "fail") await admitted.failed();
    return "admitted";
  } catch (e) {
    const err = ConnectError.from(e);
    expect(err.code).toBe(Code.ResourceExhausted);
    return {
      subject: err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject,
      retrySeconds: Number(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds),
    };
  }
}

describe("createLoginThrottle (in memory)", () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("doubles the account+IP lockout each time, up to the maximum, and a success starts over", async () => {
    vi.useFakeTimers();
    const throttle = createLoginThrottle({ limits });
    const ip = "203.0.113.7";
    const subject = `login-fails:account:ada:ip:${ip}`;
    // Known from a previous login, so only the account+IP limit applies.
    await verdict(throttle, ada(ip), "ok");
    for (const lockout of [60, 120, 200, 200]) {
      await verdict(throttle, ada(ip), "fail");
      await verdict(throttle, ada(ip), "fail");
      expect(await verdict(throttle, ada(ip))).toEqual({ subject, retrySeconds: lockout });
      vi.advanceTimersByTime(lockout * 1000);
    }
    expect(await verdict(throttle, ada(ip), "ok")).toBe("admitted");
    await verdict(throttle, ada(ip), "fail");
    await verdict(throttle, ada(ip), "fail");
    expect(await verdict(throttle, ada(ip))).toEqual({ subject, retrySeconds: 60 });
  });

  it("admits concurrent attempts on one account only up to its limit", async () => {
    const throttle = createLoginThrottle({ limits });
    const verdicts = await Promise.all(
      Array.from({ length: 10 }, (_, i) => verdict(throttle, ada(`198.51.100.${i}`))),
    );
    expect(verdicts.filter((v) => v === "admitted")).toHaveLength(3);
  });

  it("does not count refused attempts against the other limits", async () => {
    const throttle = createLoginThrottle({ limits });
    for (let i = 0; i < 3; i++) await verdict(throttle, ada(`198.51.100.${i}`), "fail");
    // Refused by the account limit many times over...
    for (let i = 0; i < 5; i++) await verdict(throttle, ada("192.0.2.1"));
    // ...which cost 192.0.2.1 nothing: it may still try another account twice.
    const bob = { account: "user:2", login: "bob", ip: "192.0.2.1" };
    expect(await verdict(throttle, bob, "fail")).toBe("admitted");
    expect(await verdict(throttle, bob, "fail")).toBe("admitted");
  });
});

const redisUp = await requireRedis("createLoginThrottle (Redis)");

describe.skipIf(!redisUp)("createLoginThrottle (Redis)", () => {
  const keyPrefix = `test:login:${randomUUID()}`;
  const clients: Redis[] = [];
  /** A throttle of its own with its own connection, as another process would have. */
  const instance = async () => {
    const redis = new Redis({ ...TEST_REDIS, maxRetriesPerRequest: 1 });
    clients.push(redis);
    // Until the client is ready the throttle counts in memory.
    await redis.ping();
    return createLoginThrottle({ limits, redis, keyPrefix, redisTimeoutMs: 1000 });
  };
  afterAll(async () => {
    if (clients[0]) await deleteKeys(clients[0], keyPrefix);
    await Promise.all(clients.map((c) => c.quit()));
  });

  it("shares failures, lockouts and known IPs between processes", async () => {
    const [a, b] = await Promise.all([instance(), instance()]);
    expect(await verdict(a, ada("203.0.113.7"), "ok")).toBe("admitted");
    for (let i = 0; i < 3; i++) await verdict(a, ada(`198.51.100.${i}`), "fail");
    // The other process refuses a new IP, and lets the known one in.
    expect(await verdict(b, ada("198.51.100.9"))).toMatchObject({
      subject: "login-fails:account:ada",
    });
    expect(await verdict(b, ada("203.0.113.7"), "ok")).toBe("admitted");
    // A lockout set by one process holds in the other.
    await verdict(b, ada("203.0.113.7"), "fail");
    await verdict(b, ada("203.0.113.7"), "fail");
    expect(await verdict(a, ada("203.0.113.7"))).toEqual({
      subject: "login-fails:account:ada:ip:203.0.113.7",
      retrySeconds: 60,
    });
    const keys = await clients[0]!.keys(`${keyPrefix}*`);
    expect(keys.length).toBeGreaterThan(0);
  });
});
