import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RequestInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import type { Store } from "../server/src/storage/store.js";
import { ADMIN_USERNAME, bearer, registerAndLogin } from "./support/auth.js";
import { startTestServer, type TestServer } from "./support/server.js";

/** The store as the server uses it, with every getUser counted and slowed down. */
function slowCountingStore(
  store: Store,
  probe: { reads: number[]; delayMs: number; bug: boolean },
) {
  return new Proxy(store, {
    get(target, prop) {
      if (prop === "getUser") {
        return async (id: string, options?: { signal?: AbortSignal }) => {
          if (probe.bug && id === "trigger-bug") {
            throw new TypeError(
              "Cannot read properties of undefined (reading 'row') at /srv/x.ts:9",
            );
          }
          if (probe.delayMs > 0) {
            await new Promise((resolve) => setTimeout(resolve, probe.delayMs));
          }
          probe.reads.push(Date.now());
          return target.getUser(id, options);
        };
      }
      // Methods run on the real store: it keeps #private state.
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe("request ids, access log and deadlines on a real server", () => {
  let server: TestServer;
  const logs: Array<Record<string, unknown>> = [];
  const probe = { reads: [] as number[], delayMs: 0, bug: true };
  let token: string;

  beforeAll(async () => {
    server = await startTestServer({
      logLines: logs,
      wrapStore: (store) => slowCountingStore(store, probe),
    });
    token = (await registerAndLogin(server.url, { username: ADMIN_USERNAME })).accessToken;
  });
  afterAll(() => server.close());

  const rpcLines = () => logs.filter((l) => l.msg === "rpc");

  it("returns the caller's x-request-id in the response headers and logs it on the call's line", async () => {
    const client = createClient(
      UserService,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        interceptors: [bearer(token)],
      }),
    );
    let responseId: string | null = null;
    let timing: string | null = null;
    const res = await client.getUserStream(
      { ids: ["nobody"] },
      {
        headers: { "x-request-id": "trace-abc-123" },
        onHeader: (h) => {
          responseId = h.get("x-request-id");
        },
        onTrailer: (t) => {
          timing = t.get("server-timing");
        },
      },
    );
    const items = [];
    for await (const item of res) items.push(item);
    expect(items).toHaveLength(1);
    expect(responseId).toBe("trace-abc-123");
    expect(timing).toMatch(/^handler;dur=\d+(\.\d)?$/);

    const line = rpcLines().find((l) => l.requestId === "trace-abc-123");
    expect(line).toMatchObject({
      procedure: "switchboard.user.v1.UserService/GetUserStream",
      protocol: "connect",
      code: "ok",
      messagesReceived: 1,
      messagesSent: 1,
      peer: "127.0.0.1",
    });
    expect(typeof line?.user).toBe("string");
    expect(typeof line?.durationMs).toBe("number");
  });

  it("generates a request id when the caller sends none, and logs a failed client stream with its counts and code", async () => {
    const client = createClient(
      UserService,
      createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }),
    );
    let responseId: string | null = null;
    const summary = await client.createUsers(
      (async function* () {
        yield { username: "obs1", email: "obs1@example.com", password: "password-1" };
        yield { username: "obs2", email: "nope", password: "password-1" };
      })(),
      {
        onHeader: (h) => {
          responseId = h.get("x-request-id");
        },
      },
    );
    expect(summary.createdCount).toBe(1);
    expect(responseId).toMatch(/^[0-9a-f-]{36}$/);
    const line = rpcLines().find((l) => l.requestId === responseId);
    expect(line).toMatchObject({
      procedure: "switchboard.user.v1.UserService/CreateUsers",
      protocol: "grpc",
      code: "ok",
      messagesReceived: 2,
      messagesSent: 1,
    });
  });

  it("ends a server stream at its 200 ms deadline with DeadlineExceeded, and the handler stops reading", async () => {
    probe.delayMs = 50;
    probe.reads.length = 0;
    const client = createClient(
      UserService,
      createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }),
    );
    const ids = Array.from({ length: 40 }, (_, i) => `missing-${i}`);
    const started = Date.now();
    let received = 0;
    const err = await (async () => {
      for await (const _ of client.getUserStream({ ids }, { timeoutMs: 200 })) received++;
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    const endedAt = Date.now();
    expect(err?.code).toBe(Code.DeadlineExceeded);
    expect(endedAt - started).toBeLessThan(1500);
    expect(received).toBeLessThan(ids.length);
    // Give a runaway handler time to show itself, then check it stopped.
    const readsAtEnd = probe.reads.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
    probe.delayMs = 0;
    expect(probe.reads.length).toBeLessThanOrEqual(readsAtEnd + 1);
    expect(probe.reads.filter((t) => t > endedAt + 100)).toEqual([]);
    expect(probe.reads.length).toBeLessThan(10);
  });

  it("turns a bug in a handler into Internal with a request id, without leaking the stack", async () => {
    const client = createClient(
      UserService,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: "1.1",
        interceptors: [bearer(token)],
      }),
    );
    let err: ConnectError | undefined;
    try {
      await client.getUser({ id: "trigger-bug" });
    } catch (e) {
      err = ConnectError.from(e);
    }
    expect(err?.code).toBe(Code.Internal);
    const requestId = err?.findDetails(RequestInfoSchema)[0]?.requestId;
    expect(requestId).toBeTruthy();
    expect(err?.rawMessage).toBe(`internal error (request id ${requestId})`);
    expect(JSON.stringify(err)).not.toMatch(/Cannot read|srv\/x\.ts|TypeError/);
    expect(String(err?.stack ?? "")).not.toMatch(/srv\/x\.ts/);
    // The stack is in the log, on a line carrying the same request id.
    const logged = logs.find(
      (l) => l.requestId === requestId && JSON.stringify(l).includes("srv/x.ts"),
    );
    expect(logged).toBeDefined();
    expect(rpcLines().find((l) => l.requestId === requestId)?.code).toBe("internal");
  });
});
