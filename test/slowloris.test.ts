import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * HTTP/1.1 clients that send their request too slowly are cut off: the
 * header and request timeouts really apply to the sockets the one-port
 * listener hands to its HTTP/1.1 parser (an http.Server that never listens,
 * whose timeout checker Node would otherwise never start). Short timeouts
 * here; the defaults are 10 s for headers and 60 s for the whole request.
 */

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer({
    env: { HEADERS_TIMEOUT_MS: "300", REQUEST_TIMEOUT_MS: "600", KEEP_ALIVE_TIMEOUT_MS: "300" },
  });
});
afterAll(() => server?.close());

/** Opens a connection, runs `drip` on it, resolves with ms until the server closed it and what it sent. */
function timeToClose(drip: (socket: net.Socket) => void): Promise<{ ms: number; text: string }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const socket = net.connect(server.port, "127.0.0.1", () => drip(socket));
    let text = "";
    socket.on("data", (c: Buffer) => {
      text += c.toString("latin1");
    });
    socket.on("error", () => undefined);
    socket.on("close", () => resolve({ ms: Date.now() - started, text }));
  });
}

describe("HTTP/1.1 timeouts on the one port", () => {
  it("closes a connection whose headers arrive a byte at a time (slowloris)", async () => {
    const request = "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: 127.0.0.1\r\n";
    const { ms, text } = await timeToClose((socket) => {
      let i = 0;
      const timer = setInterval(() => {
        if (socket.destroyed || i >= request.length) return clearInterval(timer);
        socket.write(request[i++] as string);
      }, 100);
      socket.on("close", () => clearInterval(timer));
    });
    expect(ms).toBeLessThan(5000);
    expect(text === "" || text.startsWith("HTTP/1.1 408")).toBe(true);
  });

  it("closes a connection whose request body stalls", async () => {
    const { ms } = await timeToClose((socket) => {
      socket.write(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: 127.0.0.1\r\n" +
          "content-type: application/json\r\ncontent-length: 100\r\n\r\n{",
      );
    });
    expect(ms).toBeLessThan(5000);
  });

  it("closes an idle keep-alive connection", async () => {
    const { ms, text } = await timeToClose((socket) => {
      socket.write(
        "POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: 127.0.0.1\r\n" +
          "content-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
      );
    });
    expect(text).toMatch(/^HTTP\/1\.1 200 /);
    expect(ms).toBeLessThan(5000);
  });
});
