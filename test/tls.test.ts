import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import http2 from "node:http2";
import https from "node:https";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ensureCerts } from "../scripts/lib/certs.js";
import { ROOT, startTestServer, type TestServer, tempDataDir } from "./support/server.js";

const run = promisify(execFile);
const BUF = join(ROOT, "node_modules/.bin/buf");

describe("TLS on one port", () => {
  let server: TestServer;
  let ca: Buffer;
  let caPath: string;
  let base: string;

  beforeAll(async () => {
    const dir = await tempDataDir();
    const { paths } = await ensureCerts({ dir });
    caPath = paths.caCert;
    ca = await readFile(paths.caCert);
    server = await startTestServer({
      env: { TLS_CERT: paths.serverCert, TLS_KEY: paths.serverKey },
    });
    base = `https://localhost:${server.port}`;
  });
  afterAll(() => server.close());

  it("negotiates h2 by ALPN and answers a Connect call over it", async () => {
    const session = http2.connect(base, { ca });
    try {
      await new Promise((resolve, reject) =>
        session.once("connect", resolve).once("error", reject),
      );
      const tlsSocket = session.socket as import("node:tls").TLSSocket;
      expect(tlsSocket.alpnProtocol).toBe("h2");
      const body = await new Promise<string>((resolve, reject) => {
        const stream = session.request({
          ":method": "POST",
          ":path": "/switchboard.user.v1.UserService/RegisterUser",
          "content-type": "application/json",
        });
        let text = "";
        stream.on("data", (c: Buffer) => {
          text += c.toString();
        });
        stream.on("end", () => resolve(text));
        stream.on("error", reject);
        stream.end(JSON.stringify({ username: "x" }));
      });
      expect(JSON.parse(body).code).toBe("invalid_argument");
    } finally {
      session.close();
    }
  });

  it("negotiates http/1.1 by ALPN on the same port and answers the same call", async () => {
    const res = await new Promise<{
      httpVersion: string;
      alpn: string | false | null;
      body: string;
    }>((resolve, reject) => {
      const req = https.request(
        `${base}/switchboard.user.v1.UserService/RegisterUser`,
        {
          method: "POST",
          headers: { "content-type": "application/json" },
          // Offer only http/1.1, as a browser without HTTP/2 would.
          agent: new https.Agent({ ca, ALPNProtocols: ["http/1.1"] }),
        },
        (r) => {
          const alpn = (r.socket as import("node:tls").TLSSocket).alpnProtocol;
          let text = "";
          r.on("data", (c: Buffer) => {
            text += c.toString();
          });
          r.on("end", () =>
            resolve({
              httpVersion: r.httpVersion,
              alpn,
              body: text,
            }),
          );
        },
      );
      req.on("error", reject);
      req.end(JSON.stringify({ username: "x" }));
    });
    expect(res.alpn).toBe("http/1.1");
    expect(res.httpVersion).toBe("1.1");
    expect(JSON.parse(res.body).code).toBe("invalid_argument");
  });

  it("serves buf curl over gRPC and gRPC-Web with the generated CA, via reflection", async () => {
    for (const protocol of ["grpc", "grpcweb", "connect"]) {
      const { stdout } = await run(
        BUF,
        [
          "curl",
          "--cacert",
          caPath,
          "--protocol",
          protocol,
          "-d",
          `{"username":"tls_${protocol}","email":"tls_${protocol}@example.com","password":"correct horse"}`,
          `${base}/switchboard.user.v1.UserService/RegisterUser`,
        ],
        { timeout: 20_000 },
      );
      expect(JSON.parse(stdout).user.username).toBe(`tls_${protocol}`);
    }
  });

  it("is refused by a client that does not trust the CA", async () => {
    const err = await run(BUF, ["curl", "-v", "--protocol", "grpc", "--list-methods", base], {
      timeout: 20_000,
    }).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).not.toBe(0);
    expect((err as { stderr: string }).stderr).toMatch(
      /x509: certificate signed by unknown authority/,
    );
  });
});
