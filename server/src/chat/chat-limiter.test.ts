import { durationMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Redis } from "ioredis";
import { describe, expect, it } from "vitest";
import { QuotaFailureSchema, RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { createChatLimiter } from "./chat-limiter.js";

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected a rejection");
}

describe("createChatLimiter", () => {
  it("allows the configured messages per user, then refuses with QuotaFailure and RetryInfo", async () => {
    const limiter = createChatLimiter({ limit: { points: 2, durationSeconds: 30 } });
    await limiter("u1");
    await limiter("u1");
    const err = await rejection(limiter("u1"));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(err.findDetails(QuotaFailureSchema)[0]?.violations[0]).toMatchObject({
      subject: "chat:user:u1",
      description: "at most 2 messages per 30 s per user",
    });
    const delay = err.findDetails(RetryInfoSchema)[0]?.retryDelay;
    expect(delay && durationMs(delay)).toBeGreaterThan(0);
    expect(delay && durationMs(delay)).toBeLessThanOrEqual(30_000);
    // Every user has their own budget.
    await limiter("u2");
  });

  it("counts in memory while Redis is not connected instead of failing", async () => {
    const redis = new Redis({ lazyConnect: true, enableOfflineQueue: false });
    try {
      const limiter = createChatLimiter({ limit: { points: 1, durationSeconds: 30 }, redis });
      await limiter("u1");
      expect((await rejection(limiter("u1"))).code).toBe(Code.ResourceExhausted);
    } finally {
      redis.disconnect();
    }
  });
});
