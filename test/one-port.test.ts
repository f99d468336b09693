import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { bearer, registerAndLogin } from "./support/auth.js";
import { startTestServer, type TestServer } from "./support/server.js";

/** POSTs a Connect unary call over HTTP/1.1 and returns status, HTTP version and JSON body. */
function postH1(url: string, body: unknown) {
  return new Promise<{ status: number; httpVersion: string; json: Record<string, unknown> }>(
    (resolve, reject) => {
      const req = http.request(
        url,
        { method: "POST", headers: { "content-type": "application/json" } },
        (res) => {
          let text = "";
          res.on("data", (c: Buffer) => {
            text += c.toString();
          });
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              httpVersion: res.httpVersion,
              json: JSON.parse(text),
            }),
          );
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify(body));
    },
  );
}

describe("one cleartext port", () => {
  let server: TestServer;
  let REGISTER: string;
  let token: string;
  beforeAll(async () => {
    server = await startTestServer({ env: { MAX_MESSAGE_BYTES: "2048", MAX_OPEN_STREAMS: "2" } });
    REGISTER = `${server.url}/switchboard.user.v1.UserService/RegisterUser`;
    token = (await registerAndLogin(server.url)).accessToken;
  });
  afterAll(() => server.close());

  it("serves Connect over HTTP/1.1 and over h2c prior knowledge on the same port", async () => {
    const h1 = await postH1(REGISTER, { username: "x" });
    expect(h1.httpVersion).toBe("1.1");
    expect(h1.status).toBe(400);
    expect(h1.json.code).toBe("invalid_argument");

    const session = http2.connect(server.url);
    try {
      const h2 = await new Promise<{ status: number; json: Record<string, unknown> }>(
        (resolve, reject) => {
          const stream = session.request({
            ":method": "POST",
            ":path": "/switchboard.user.v1.UserService/RegisterUser",
            "content-type": "application/json",
          });
          let status = 0;
          let text = "";
          stream.on("response", (headers) => {
            status = Number(headers[":status"]);
          });
          stream.on("data", (c: Buffer) => {
            text += c.toString();
          });
          stream.on("end", () => resolve({ status, json: JSON.parse(text) }));
          stream.on("error", reject);
          stream.end(JSON.stringify({ username: "x" }));
        },
      );
      expect(h2.status).toBe(400);
      expect(h2.json.code).toBe("invalid_argument");
    } finally {
      session.close();
    }
  });

  it("detects HTTP/2 even when the preface arrives a few bytes at a time", async () => {
    const socket = net.connect(server.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    socket.setNoDelay(true);
    for (let i = 0; i < preface.length; i += 5) {
      socket.write(preface.subarray(i, i + 5));
      await new Promise((r) => setTimeout(r, 10));
    }
    // An empty SETTINGS frame; an HTTP/2 server answers with its own SETTINGS.
    socket.write(Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]));
    const reply = await new Promise<Buffer>((resolve) => socket.once("data", resolve));
    socket.destroy();
    expect(reply[3]).toBe(4); // frame type SETTINGS
  });

  it("survives a client that connects and leaves without a byte", async () => {
    const socket = net.connect(server.port, "127.0.0.1");
    await new Promise((r) => socket.once("connect", r));
    socket.end();
    await new Promise((r) => socket.once("close", r));
    const h1 = await postH1(REGISTER, { username: "x" });
    expect(h1.status).toBe(400);
  });

  it("rejects a request message over MAX_MESSAGE_BYTES with ResourceExhausted, on gRPC and Connect", async () => {
    const big = { username: "biggie", email: "big@example.com", password: "p".repeat(4096) };
    for (const transport of [
      createGrpcTransport({ baseUrl: server.url }),
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }),
    ]) {
      const client = createClient(UserService, transport);
      const err = await client.registerUser(big).catch((e: unknown) => ConnectError.from(e));
      expect(err).toBeInstanceOf(ConnectError);
      expect((err as ConnectError).code).toBe(Code.ResourceExhausted);
    }
  });

  it("caps open streams with ResourceExhausted and frees the slot when a stream ends", async () => {
    const client = createClient(
      UserService,
      createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(token)] }),
    );
    const controllers = [new AbortController(), new AbortController()];
    const open = controllers.map((c) => {
      const it = client.watchUsers({}, { signal: c.signal })[Symbol.asyncIterator]();
      // Pull once so the call is on the wire; no user exists, so it waits.
      const pending = it.next().catch(() => undefined);
      return pending;
    });
    await expect.poll(() => server.app.calls.openStreams()).toBe(2);
    const third = await (async () => {
      for await (const _ of client.watchUsers({})) break;
    })().catch((e: unknown) => ConnectError.from(e));
    expect(third).toBeInstanceOf(ConnectError);
    expect((third as ConnectError).code).toBe(Code.ResourceExhausted);

    for (const c of controllers) c.abort();
    await Promise.all(open);
    await expect.poll(() => server.app.calls.openStreams()).toBe(0);
    // The freed slots take a fresh stream again.
    const fourth = new AbortController();
    const stream = client.watchUsers({}, { signal: fourth.signal })[Symbol.asyncIterator]();
    // It is accepted: it delivers the one existing user (the test's own).
    const first = await stream.next();
    expect(first.done).toBe(false);
    expect(server.app.calls.openStreams()).toBe(1);
    fourth.abort();
    await expect.poll(() => server.app.calls.openStreams()).toBe(0);
  });
});
