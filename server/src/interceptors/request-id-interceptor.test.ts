import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { kLogger, kRequestId } from "../context.js";
import { REQUEST_ID_HEADER, requestIdInterceptor } from "./request-id-interceptor.js";
import {
  captureLogs,
  memoryClient,
  recordInto,
  type Seen,
  startWireServers,
  tinyUserService,
  type WireServers,
} from "./test-support.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The ConnectError a call (or a stream read to its end) fails with. */
async function failureOf(call: Promise<unknown> | AsyncIterable<unknown>): Promise<ConnectError> {
  try {
    if (Symbol.asyncIterator in call) for await (const _ of call);
    else await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

/** A service whose handlers report what they saw in their context, and fail on request. */
function seeingService(seen: { requestId?: string }) {
  return tinyUserService({
    getUser(req, ctx) {
      seen.requestId = ctx.values.get(kRequestId);
      ctx.values.get(kLogger)?.logger.info("inside the handler");
      if (req.id === "missing") throw new ConnectError("user not found", Code.NotFound);
      return { user: { id: req.id } };
    },
    async *getUserStream(req, ctx) {
      seen.requestId = ctx.values.get(kRequestId);
      for (const id of req.ids) {
        if (id === "missing") throw new ConnectError("user not found", Code.NotFound);
        yield { id };
      }
    },
  });
}

describe("requestIdInterceptor (in memory)", () => {
  it("generates an id, hands it and a bound logger to the handler, and returns it", async () => {
    const { logger, lines } = captureLogs();
    const seen: { requestId?: string } = {};
    const client = memoryClient([requestIdInterceptor(logger)], seeingService(seen));
    const response: Seen = {};
    await client.getUser({ id: "1" }, recordInto(response));
    expect(seen.requestId).toMatch(UUID);
    expect(response.header?.get(REQUEST_ID_HEADER)).toBe(seen.requestId);
    expect(lines).toEqual([
      expect.objectContaining({
        msg: "inside the handler",
        requestId: seen.requestId,
        procedure: "switchboard.user.v1.UserService/GetUser",
      }),
    ]);
  });

  it("keeps a sane id from the caller", async () => {
    const { logger } = captureLogs();
    const seen: { requestId?: string } = {};
    const client = memoryClient([requestIdInterceptor(logger)], seeingService(seen));
    const id = `trace-1.2:abc_DEF-${"x".repeat(100)}`;
    const response: Seen = {};
    await client.getUser({ id: "1" }, recordInto(response, { headers: { "x-request-id": id } }));
    expect(seen.requestId).toBe(id);
    expect(response.header?.get(REQUEST_ID_HEADER)).toBe(id);
  });

  it.each([
    ["too long", "a".repeat(129)],
    ["a space", "abc def"],
    ["a slash", "abc/def"],
    ["non-ASCII", "zürich"],
    ["a CRLF-free but JSON-ish value", '{"evil":1}'],
  ])("replaces an id with %s by a fresh one, without failing the call", async (_, bad) => {
    const { logger } = captureLogs();
    const seen: { requestId?: string } = {};
    const client = memoryClient([requestIdInterceptor(logger)], seeingService(seen));
    const response: Seen = {};
    await client.getUser({ id: "1" }, recordInto(response, { headers: { "x-request-id": bad } }));
    expect(seen.requestId).toMatch(UUID);
    expect(response.header?.get(REQUEST_ID_HEADER)).toBe(seen.requestId);
  });

  it("returns the id as header and trailer of server and client streams", async () => {
    const { logger } = captureLogs();
    const client = memoryClient([requestIdInterceptor(logger)]);
    const server: Seen = {};
    const items = [];
    for await (const item of client.getUserStream({ ids: ["a", "b"] }, recordInto(server))) {
      items.push(item.id);
    }
    expect(items).toEqual(["a", "b"]);
    expect(server.header?.get(REQUEST_ID_HEADER)).toMatch(UUID);
    expect(server.trailer?.get(REQUEST_ID_HEADER)).toBe(server.header?.get(REQUEST_ID_HEADER));

    const clientStream: Seen = {};
    await client.createUsers(
      (async function* () {
        yield { username: "a" };
        yield { username: "b" };
      })(),
      recordInto(clientStream, { headers: { "x-request-id": "bulk-1" } }),
    );
    expect(clientStream.header?.get(REQUEST_ID_HEADER)).toBe("bulk-1");
    expect(clientStream.trailer?.get(REQUEST_ID_HEADER)).toBe("bulk-1");
  });

  it("puts the id into errors: unary, stream before and after its first message", async () => {
    const { logger } = captureLogs();
    const seen: { requestId?: string } = {};
    const client = memoryClient([requestIdInterceptor(logger)], seeingService(seen));
    const unary = await failureOf(client.getUser({ id: "missing" }));
    expect(unary.code).toBe(Code.NotFound);
    expect(unary.metadata.get(REQUEST_ID_HEADER)).toBe(seen.requestId);
    for (const ids of [["missing"], ["a", "missing"]]) {
      const stream = await failureOf(client.getUserStream({ ids }));
      expect(stream.code).toBe(Code.NotFound);
      // Once: from the stream's header (clients merge header and trailer).
      expect(stream.metadata.get(REQUEST_ID_HEADER)).toBe(seen.requestId);
    }
  });

  it("replaces a foreign request id carried by an error (e.g. from a downstream call)", async () => {
    const { logger } = captureLogs();
    const downstream = () =>
      new ConnectError("downstream failed", Code.Unavailable, { "x-request-id": "theirs" });
    const client = memoryClient(
      [requestIdInterceptor(logger)],
      tinyUserService({
        getUser() {
          throw downstream();
        },
        // biome-ignore lint/correctness/useYield: fails before its first message
        async *getUserStream() {
          throw downstream();
        },
      }),
    );
    const headers = { "x-request-id": "ours" };
    const unary = await failureOf(client.getUser({ id: "1" }, { headers }));
    expect(unary.metadata.get(REQUEST_ID_HEADER)).toBe("ours");
    const stream = await failureOf(client.getUserStream({ ids: ["a"] }, { headers }));
    expect(stream.metadata.get(REQUEST_ID_HEADER)).toBe("ours");
  });

  it("tags errors thrown before a stream starts (e.g. by an inner interceptor)", async () => {
    const { logger } = captureLogs();
    const client = memoryClient([
      requestIdInterceptor(logger),
      () => () => Promise.reject(new ConnectError("no", Code.PermissionDenied)),
    ]);
    const err = await failureOf(
      client.getUserStream({ ids: ["a"] }, { headers: { "x-request-id": "denied-1" } }),
    );
    expect(err.code).toBe(Code.PermissionDenied);
    expect(err.metadata.get(REQUEST_ID_HEADER)).toBe("denied-1");
  });
});

describe("requestIdInterceptor (real servers, every protocol)", () => {
  let servers: WireServers;
  beforeAll(async () => {
    const { logger } = captureLogs();
    servers = await startWireServers(
      (router) => router.service(UserService, seeingService({})),
      [requestIdInterceptor(logger)],
    );
  });
  afterAll(() => servers.close());

  it("sends the id in the unary response header, for a generated and a given id", async () => {
    for (const { name, transport } of servers.clients) {
      const client = createClient(UserService, transport);
      const generated: Seen = {};
      await client.getUser({ id: "1" }, recordInto(generated));
      expect(generated.header?.get(REQUEST_ID_HEADER), name).toMatch(UUID);
      const given: Seen = {};
      const id = `unary-${name.replace(/[^a-z0-9]/g, "")}`;
      await client.getUser({ id: "1" }, recordInto(given, { headers: { "x-request-id": id } }));
      expect(given.header?.get(REQUEST_ID_HEADER), name).toBe(id);
    }
  });

  it("sends the id in a stream's header and trailer", async () => {
    for (const { name, transport } of servers.clients) {
      const client = createClient(UserService, transport);
      const seen: Seen = {};
      const id = `stream-${name.replace(/[^a-z0-9]/g, "")}`;
      for await (const _ of client.getUserStream(
        { ids: ["a", "b"] },
        recordInto(seen, { headers: { "x-request-id": id } }),
      ));
      expect(seen.header?.get(REQUEST_ID_HEADER), name).toBe(id);
      expect(seen.trailer?.get(REQUEST_ID_HEADER), name).toBe(id);
    }
  });

  it("sends the id exactly once with unary and stream errors", async () => {
    for (const { name, transport } of servers.clients) {
      const client = createClient(UserService, transport);
      const headers = { "x-request-id": "err-1" };
      const unary = await failureOf(client.getUser({ id: "missing" }, { headers }));
      expect(unary.code, name).toBe(Code.NotFound);
      expect(unary.metadata.get(REQUEST_ID_HEADER), name).toBe("err-1");
      for (const ids of [["missing"], ["a", "missing"]]) {
        const stream = await failureOf(client.getUserStream({ ids }, { headers }));
        expect(stream.code, `${name} ${ids}`).toBe(Code.NotFound);
        // Not "err-1, err-1": sent once, in the stream's header.
        expect(stream.metadata.get(REQUEST_ID_HEADER), `${name} ${ids}`).toBe("err-1");
      }
    }
  });
});
