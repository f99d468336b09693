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

describe("TLS with client certificates (TLS_CLIENT_CA)", () => {
  let dir: string;
  let serverCa: Buffer;
  let paths: Awaited<ReturnType<typeof ensureCerts>>["paths"];
  const client: { cert?: Buffer; key?: Buffer; strangerCert?: Buffer; strangerKey?: Buffer } = {};
  const servers: TestServer[] = [];

  /** A CA, a client certificate it signed, and one from a CA the server does not know. */
  beforeAll(async () => {
    dir = await tempDataDir();
    ({ paths } = await ensureCerts({ dir }));
    serverCa = await readFile(paths.caCert);
    const ssl = (...args: string[]) => run("openssl", args, { cwd: dir });
    for (const name of ["clients-ca", "stranger-ca"]) {
      await ssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        `/CN=${name}`,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.crt`,
      );
    }
    for (const [name, ca] of [
      ["client", "clients-ca"],
      ["stranger", "stranger-ca"],
    ] as const) {
      await ssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        `/CN=${name}`,
        "-keyout",
        `${name}.key`,
        "-out",
        `${name}.csr`,
      );
      await ssl(
        "x509",
        "-req",
        "-in",
        `${name}.csr`,
        "-CA",
        `${ca}.crt`,
        "-CAkey",
        `${ca}.key`,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        `${name}.crt`,
      );
    }
    client.cert = await readFile(join(dir, "client.crt"));
    client.key = await readFile(join(dir, "client.key"));
    client.strangerCert = await readFile(join(dir, "stranger.crt"));
    client.strangerKey = await readFile(join(dir, "stranger.key"));
  }, 60_000);
  afterAll(async () => {
    for (const server of servers) await server.close();
  });

  async function start(clientAuth: "require" | "request") {
    const server = await startTestServer({
      env: {
        TLS_CERT: paths.serverCert,
        TLS_KEY: paths.serverKey,
        TLS_CLIENT_CA: join(dir, "clients-ca.crt"),
        TLS_CLIENT_AUTH: clientAuth,
      },
    });
    servers.push(server);
    return server;
  }

  /** A health check over h2 with or without a client certificate: "ok" or the failure. */
  function check(server: TestServer, cert?: Buffer, key?: Buffer): Promise<string> {
    return new Promise((resolve) => {
      const session = http2.connect(`https://localhost:${server.port}`, {
        ca: serverCa,
        ...(cert && key ? { cert, key } : {}),
      });
      session.on("error", (err) => resolve(`refused: ${err.message}`));
      const stream = session.request({
        ":method": "POST",
        ":path": "/grpc.health.v1.Health/Check",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", (err) => resolve(`refused: ${err.message}`));
      stream.on("trailers", (t) => {
        resolve(t["grpc-status"] === "0" ? "ok" : `status ${t["grpc-status"]}`);
        session.close();
      });
      // A handshake the server refuses may just close the connection.
      stream.on("close", () => resolve("refused: closed"));
      session.on("close", () => resolve("refused: closed"));
      stream.end(Buffer.alloc(5));
    });
  }

  it("requires a certificate signed by TLS_CLIENT_CA by default", async () => {
    const server = await start("require");
    expect(await check(server, client.cert, client.key)).toBe("ok");
    expect(await check(server)).toMatch(/^refused/);
    expect(await check(server, client.strangerCert, client.strangerKey)).toMatch(/^refused/);
  });

  it("with TLS_CLIENT_AUTH=request lets clients without a certificate in, but not a bad one", async () => {
    const server = await start("request");
    expect(await check(server, client.cert, client.key)).toBe("ok");
    expect(await check(server)).toBe("ok");
    expect(await check(server, client.strangerCert, client.strangerKey)).toMatch(/^refused/);
  });
});
