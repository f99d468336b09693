import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { QuotaFailureSchema } from "../gen/google/rpc/error_details_pb.js";
import { Health } from "../gen/health/v1/health_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { registerAndLogin, type Session } from "./support/auth.js";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * Open streams are counted per caller below the process cap: anonymous
 * clients (health Watch is public) get a small per-IP quota and cannot take
 * the slots logged-in users need; each user has a quota of their own.
 */

let server: TestServer;
let session: Session;
beforeAll(async () => {
  server = await startTestServer({
    env: { MAX_STREAMS_PER_ANONYMOUS_IP: "3", MAX_STREAMS_PER_USER: "2" },
  });
  session = await registerAndLogin(server.url);
});
afterAll(() => server?.close());

/** Opens a stream and waits for its first message; returns the controller that ends it. */
async function open(
  iterate: (signal: AbortSignal) => AsyncIterable<unknown>,
): Promise<AbortController> {
  const controller = new AbortController();
  const it = iterate(controller.signal)[Symbol.asyncIterator]();
  await it.next();
  // Keep reading in the background so the stream stays healthy.
  void (async () => {
    try {
      for (;;) if ((await it.next()).done) return;
    } catch {
      // Ended by the test.
    }
  })();
  return controller;
}

async function refusal(iterate: () => AsyncIterable<unknown>): Promise<ConnectError> {
  try {
    for await (const _ of iterate()) return new ConnectError("stream was admitted", Code.Unknown);
  } catch (err) {
    return ConnectError.from(err);
  }
  return new ConnectError("stream ended", Code.Unknown);
}

describe("per-caller stream quotas", () => {
  it("limits anonymous streams per IP without taking logged-in users' streams", async () => {
    const transport = createGrpcTransport({ baseUrl: server.url });
    const health = createClient(Health, transport);
    const users = createClient(UserService, transport);
    const auth = { authorization: `Bearer ${session.accessToken}` };
    const anonymous = await Promise.all(
      [1, 2, 3].map(() => open((signal) => health.watch({}, { signal }))),
    );
    const refused = await refusal(() => health.watch({}));
    expect(refused.code).toBe(Code.ResourceExhausted);
    expect(refused.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).toBe(
      "streams:ip:127.0.0.1",
    );

    // The same IP, logged in: its own quota.
    const mine = await Promise.all(
      [1, 2].map(() => open((signal) => users.watchUsers({}, { signal, headers: auth }))),
    );
    const overMine = await refusal(() => users.watchUsers({}, { headers: auth }));
    expect(overMine.code).toBe(Code.ResourceExhausted);
    expect(overMine.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject).toBe(
      `streams:user:${session.userId}`,
    );

    // A closed stream gives its slot back.
    mine[0]?.abort();
    await expect
      .poll(async () => {
        const c = await open((signal) => users.watchUsers({}, { signal, headers: auth })).catch(
          () => undefined,
        );
        c?.abort();
        return c !== undefined;
      })
      .toBe(true);
    for (const c of [...anonymous, ...mine]) c.abort();
  });
});
