import http2 from "node:http2";
import net from "node:net";
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HealthCheckRequestSchema } from "../gen/health/v1/health_pb.js";
import { envelope } from "./support/differential.js";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * Requests a fuzzer or an attacker sends, over the wire to the real server:
 * each gets a well-formed, typed answer and one structured log line — never
 * an empty 200, a masked 500, a reset stream or a stack trace.
 */

let server: TestServer;
const logLines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  server = await startTestServer({ env: { LOG_LEVEL: "info" }, logLines });
});
afterAll(() => server?.close());

/** Sends raw bytes on a fresh connection; resolves with everything read until the server closes. */
function raw(bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, "127.0.0.1", () => socket.write(bytes));
    let text = "";
    socket.on("data", (c: Buffer) => {
      text += c.toString("latin1");
      // One answer is enough: close instead of waiting for keep-alive to end.
      if (/\r\n\r\n/.test(text) && /content-length: (\d+)/i.test(text)) {
        const length = Number(/content-length: (\d+)/i.exec(text)?.[1]);
        if (text.length >= text.indexOf("\r\n\r\n") + 4 + length) socket.end();
      }
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(text));
  });
}

describe("hostile input over the wire", () => {
  it("answers an RPC with an invalid Host 400, with one log line, on every protocol", async () => {
    for (const contentType of [
      "application/json",
      "application/proto",
      "application/grpc-web+proto",
      "application/connect+json",
    ]) {
      const reply = await raw(
        `POST /grpc.health.v1.Health/Check HTTP/1.1\r\nhost: [x\r\ncontent-type: ${contentType}\r\n` +
          "content-length: 2\r\nconnection: close\r\n\r\n{}",
      );
      expect(reply).toMatch(/^HTTP\/1\.1 400 /);
    }
    expect(logLines.filter((l) => l.msg === "bad request: invalid host").length).toBe(4);
  });

  it("answers HTTP/1.0 without a Host 400 instead of an empty 200", async () => {
    const reply = await raw(
      "POST /switchboard.user.v1.UserService/GetUser HTTP/1.0\r\n" +
        "content-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    );
    expect(reply).toMatch(/^HTTP\/1\.[01] 400 /);
    expect(reply).toContain("missing host");
  });

  it("answers a 70 KB service name in Health.Check with NOT_FOUND and a bounded grpc-message", async () => {
    const client = http2.connect(server.url);
    try {
      const answer = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        const stream = client.request({
          ":method": "POST",
          ":path": "/grpc.health.v1.Health/Check",
          "content-type": "application/grpc",
          te: "trailers",
        });
        stream.on("trailers", resolve);
        stream.on("error", reject);
        stream.on("close", () => reject(new Error(`closed, rstCode ${stream.rstCode}`)));
        stream.end(
          envelope(
            toBinary(
              HealthCheckRequestSchema,
              create(HealthCheckRequestSchema, { service: "s".repeat(70_000) }),
            ),
          ),
        );
      });
      expect(answer["grpc-status"]).toBe("5");
      expect(String(answer["grpc-message"]).length).toBeLessThan(2048);
    } finally {
      client.close();
    }
  });

  it("answers a Connect GET whose message is not base64 with invalid_argument, not a masked 500", async () => {
    for (const message of ["!!", "%ZZ"]) {
      const res = await fetch(
        `${server.url}/switchboard.user.v1.UserService/GetUser?connect=v1&encoding=json&base64=1&message=${message}`,
      );
      expect(res.status).toBe(400);
      expect(((await res.json()) as { code: string }).code).toBe("invalid_argument");
    }
  });
});
