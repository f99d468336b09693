import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import {
  memoryClient,
  recordInto,
  type Seen,
  startWireServers,
  tinyUserService,
  type WireServers,
} from "./test-support.js";
import { SERVER_TIMING_HEADER, timingInterceptor } from "./timing-interceptor.js";

const TIMING = /^handler;dur=(\d+\.\d)$/;

/** The duration in a server-timing value; fails the test if the value is malformed. */
function durationIn(value: string | null | undefined): number {
  const match = TIMING.exec(value ?? "");
  if (!match) throw new Error(`not a server-timing value: ${value}`);
  return Number(match[1]);
}

/** A service whose handlers take a while: 30 ms for a unary call, 3 × 15 ms for a stream. */
const slowService = tinyUserService({
  async getUser(req) {
    await sleep(30);
    if (req.id === "missing") throw new ConnectError("user not found", Code.NotFound);
    return { user: { id: req.id } };
  },
  async *getUserStream(req) {
    for (const id of req.ids) {
      await sleep(15);
      if (id === "missing") throw new ConnectError("user not found", Code.NotFound);
      yield { id };
    }
  },
});

describe("timingInterceptor (in memory)", () => {
  it("puts the handler's duration in a unary response header", async () => {
    const client = memoryClient([timingInterceptor()], slowService);
    const seen: Seen = {};
    await client.getUser({ id: "1" }, recordInto(seen));
    const dur = durationIn(seen.header?.get(SERVER_TIMING_HEADER));
    expect(dur).toBeGreaterThanOrEqual(29);
    expect(dur).toBeLessThan(1000);
    expect(seen.trailer?.get(SERVER_TIMING_HEADER) ?? null).toBeNull();
  });

  it("puts a stream's whole duration in its trailer, not its header", async () => {
    const client = memoryClient([timingInterceptor()], slowService);
    const seen: Seen = {};
    for await (const _ of client.getUserStream({ ids: ["a", "b", "c"] }, recordInto(seen)));
    expect(seen.header?.get(SERVER_TIMING_HEADER) ?? null).toBeNull();
    expect(durationIn(seen.trailer?.get(SERVER_TIMING_HEADER))).toBeGreaterThanOrEqual(44);
  });

  it("also times client streams in the trailer", async () => {
    const client = memoryClient([timingInterceptor()]);
    const seen: Seen = {};
    await client.createUsers(
      (async function* () {
        yield { username: "a" };
        await sleep(20);
        yield { username: "b" };
      })(),
      recordInto(seen),
    );
    expect(seen.header?.get(SERVER_TIMING_HEADER) ?? null).toBeNull();
    expect(durationIn(seen.trailer?.get(SERVER_TIMING_HEADER))).toBeGreaterThanOrEqual(19);
  });

  it("puts the duration into errors", async () => {
    const client = memoryClient([timingInterceptor()], slowService);
    const calls = [
      () => client.getUser({ id: "missing" }),
      async () => {
        for await (const _ of client.getUserStream({ ids: ["a", "missing"] }));
      },
    ];
    for (const call of calls) {
      const err = await call().then(
        () => {
          throw new Error("expected the call to fail");
        },
        (e: unknown) => ConnectError.from(e),
      );
      expect(err.code).toBe(Code.NotFound);
      expect(durationIn(err.metadata.get(SERVER_TIMING_HEADER))).toBeGreaterThanOrEqual(29);
    }
  });
});

describe("timingInterceptor (real servers, every protocol)", () => {
  let servers: WireServers;
  beforeAll(async () => {
    servers = await startWireServers(
      (router) => router.service(UserService, slowService),
      [timingInterceptor()],
    );
  });
  afterAll(() => servers.close());

  it("sends server-timing as a unary header", async () => {
    for (const { name, transport } of servers.clients) {
      const seen: Seen = {};
      await createClient(UserService, transport).getUser({ id: "1" }, recordInto(seen));
      expect(durationIn(seen.header?.get(SERVER_TIMING_HEADER)), name).toBeGreaterThanOrEqual(29);
    }
  });

  it("sends server-timing as a stream trailer only", async () => {
    for (const { name, transport } of servers.clients) {
      const seen: Seen = {};
      const client = createClient(UserService, transport);
      for await (const _ of client.getUserStream({ ids: ["a", "b", "c"] }, recordInto(seen)));
      expect(seen.header?.get(SERVER_TIMING_HEADER) ?? null, name).toBeNull();
      expect(durationIn(seen.trailer?.get(SERVER_TIMING_HEADER)), name).toBeGreaterThanOrEqual(44);
    }
  });

  it("sends server-timing exactly once with errors", async () => {
    for (const { name, transport } of servers.clients) {
      const client = createClient(UserService, transport);
      const unary = await client.getUser({ id: "missing" }).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      expect(durationIn(unary?.metadata.get(SERVER_TIMING_HEADER)), name).toBeGreaterThanOrEqual(
        29,
      );
      const stream = await (async () => {
        for await (const _ of client.getUserStream({ ids: ["a", "missing"] }));
      })().catch((e) => ConnectError.from(e));
      expect(durationIn(stream?.metadata.get(SERVER_TIMING_HEADER)), name).toBeGreaterThanOrEqual(
        29,
      );
    }
  });
});
