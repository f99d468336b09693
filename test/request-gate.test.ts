import http2 from "node:http2";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * The engine's request gate (server/src/rpc/request-gate.ts): a unary call
 * is authenticated and rate-limited from its headers before its body is
 * read, so an unauthenticated client that announces a large body and sends
 * it slowly (or never finishes it) is refused at once, without the server
 * buffering it. Body errors then come back with the request id, logged.
 */

let server: TestServer;
const logLines: Array<Record<string, unknown>> = [];
beforeAll(async () => {
  server = await startTestServer({ env: { LOG_LEVEL: "info" }, logLines });
});
afterAll(() => server?.close());

const GET_USER = "/switchboard.user.v1.UserService/GetUser";

/** A 5-byte gRPC prefix announcing `length` bytes, and a first piece of them. */
function announced(length: number, sent: number): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(length, 1);
  return Buffer.concat([head, Buffer.alloc(sent)]);
}

describe("the request gate", () => {
  for (const contentType of ["application/grpc", "application/grpc-web+proto"]) {
    it(`refuses an unauthenticated ${contentType} call before its (unfinished) body is read`, async () => {
      const client = http2.connect(server.url);
      try {
        const result = await new Promise<{ status: string; how: string }>((resolve) => {
          const stream = client.request({
            ":method": "POST",
            ":path": GET_USER,
            "content-type": contentType,
            te: "trailers",
          });
          let body = "";
          stream.on("data", (c: Buffer) => {
            body += c.toString("latin1");
          });
          stream.on("trailers", (t) =>
            resolve({ status: String(t["grpc-status"]), how: "trailers" }),
          );
          stream.on("end", () => {
            const status = /grpc-status: ?(\d+)/.exec(body)?.[1];
            if (status) resolve({ status, how: "trailer frame" });
          });
          stream.on("error", () => undefined);
          // 3 MiB announced, 64 KiB sent, the request never ended.
          stream.write(announced(3 * 1024 * 1024, 64 * 1024));
        });
        expect(result.status).toBe("16");
      } finally {
        client.destroy();
      }
    });
  }

  it("refuses an unauthenticated Connect POST over HTTP/1.1 before its body arrives", async () => {
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(server.port, "127.0.0.1", () => {
        socket.write(
          `POST ${GET_USER} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/proto\r\n` +
            "content-length: 3000000\r\n\r\n",
        );
        socket.write(Buffer.alloc(1000));
      });
      let text = "";
      socket.on("data", (c: Buffer) => {
        text += c.toString("latin1");
        if (text.includes("}")) {
          socket.destroy();
          resolve(text);
        }
      });
      socket.on("error", reject);
    });
    expect(reply).toMatch(/^HTTP\/1\.1 401 /);
    expect(reply).toContain('"code":"unauthenticated"');
  });

  it("raises a body error inside the chain: the answer has the request id, the access log a line", async () => {
    const client = http2.connect(server.url);
    try {
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = client.request({
          ":method": "POST",
          ":path": "/switchboard.user.v1.UserService/RegisterUser",
          "content-type": "application/grpc",
          te: "trailers",
          "x-request-id": "gate-body-error",
        });
        stream.on("trailers", resolve);
        stream.on("error", reject);
        // Not a RegisterUserRequest: a truncated length-delimited field.
        stream.end(Buffer.concat([announced(3, 0), Buffer.from([0x0a, 0xff, 0xff])]));
      });
      expect(trailers["grpc-status"]).not.toBe("0");
      expect(trailers["x-request-id"]).toBe("gate-body-error");
      await expect
        .poll(() => logLines.filter((l) => l.requestId === "gate-body-error").length)
        .toBe(1);
    } finally {
      client.close();
    }
  });
});
