import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * HTTP/2 sessions are reaped when idle with no open stream — including the
 * ones Node stops reading after it answered a rapid-reset flood with GOAWAY,
 * which would otherwise hold their socket (and a file descriptor) for good —
 * while a session with a quiet open stream is left alone.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({ env: { HTTP2_IDLE_TIMEOUT_MS: "300" } });
});
afterAll(() => server?.close());

describe("HTTP/2 session reaping", () => {
  it("destroys the session of a rapid-reset flood (HEADERS + RST_STREAM pairs)", async () => {
    const before = server.app.listener.connectionCount();
    const client = http2.connect(server.url);
    client.on("error", () => undefined);
    await new Promise((resolve) => client.once("connect", resolve));
    expect(server.app.listener.connectionCount()).toBe(before + 1);
    await new Promise<void>((resolve) => {
      let sent = 0;
      const burst = () => {
        try {
          for (let k = 0; k < 200 && sent < 3000; k++, sent++) {
            const req = client.request({
              ":method": "POST",
              ":path": "/grpc.health.v1.Health/Check",
              "content-type": "application/grpc",
            });
            req.on("error", () => undefined);
            req.close(http2.constants.NGHTTP2_CANCEL);
          }
        } catch {
          sent = 3000; // the session is gone: the server answered the flood
        }
        if (sent < 3000 && !client.destroyed) setImmediate(burst);
        else resolve();
      };
      burst();
    });
    await expect.poll(() => server.app.listener.connectionCount(), { timeout: 5000 }).toBe(before);
    client.destroy();
  });

  it("keeps a quiet session that holds an open stream", async () => {
    const client = http2.connect(server.url);
    try {
      const stream = client.request({
        ":method": "POST",
        ":path": "/grpc.health.v1.Health/Watch",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => undefined);
      const first = new Promise((resolve) => stream.once("data", resolve));
      stream.end(Buffer.alloc(5));
      await first;
      // Far past the idle timeout with no frame either way.
      await new Promise((resolve) => setTimeout(resolve, 1200));
      expect(stream.closed).toBe(false);
      expect(client.closed || client.destroyed).toBe(false);
    } finally {
      client.destroy();
    }
  });
});
