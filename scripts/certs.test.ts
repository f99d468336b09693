import { execFile } from "node:child_process";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import * as x509 from "@peculiar/x509";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type CertPaths, certPaths, ensureCerts, SERVER_VALIDITY_DAYS } from "./lib/certs.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const DAY_MS = 86_400_000;
const tmpDirs: string[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-certs-"));
  tmpDirs.push(dir);
  return dir;
}

/** Runs `npm run certs` the way npm does (node --import tsx scripts/certs.ts). */
async function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await promisify(execFile)(
      process.execPath,
      ["--import", "tsx", "scripts/certs.ts", ...args],
      { cwd: root, env: { ...process.env, CERTS_DIR: "", ...env } },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: e.code ?? -1, stdout: e.stdout ?? "", stderr: e.stderr ?? "" };
  }
}

function read(paths: CertPaths): Record<keyof CertPaths, string> {
  return {
    caCert: readFileSync(paths.caCert, "utf8"),
    caKey: readFileSync(paths.caKey, "utf8"),
    serverCert: readFileSync(paths.serverCert, "utf8"),
    serverKey: readFileSync(paths.serverKey, "utf8"),
  };
}

/** Starts a TLS server on 127.0.0.1:0 with the generated server cert and key. */
async function startTlsServer(paths: CertPaths): Promise<tls.Server> {
  const server = tls.createServer(
    { cert: readFileSync(paths.serverCert), key: readFileSync(paths.serverKey) },
    (socket) => socket.end(),
  );
  // A client rejecting the cert aborts the handshake; that is expected here.
  server.on("tlsClientError", () => {});
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

/** Completes a TLS handshake and reports whether the client accepted the server cert. */
function handshake(server: tls.Server, options: tls.ConnectionOptions): Promise<boolean> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: "127.0.0.1", port, ...options }, () => {
      const { authorized } = socket;
      socket.destroy();
      resolve(authorized);
    });
    socket.on("error", reject);
  });
}

describe("npm run certs", () => {
  let dir: string;
  let paths: CertPaths;
  let cliOutput: string;

  beforeAll(async () => {
    dir = tempDir();
    const result = await runCli(["--out", dir]);
    expect(result.stderr).not.toMatch(/error/i);
    expect(result.code).toBe(0);
    cliOutput = result.stdout;
    paths = certPaths(dir);
  });

  afterAll(() => {
    for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
  });

  it("writes ca.crt, ca.key, server.crt and server.key into --out and says how to use them", () => {
    const files = read(paths);
    expect(files.caCert).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
    expect(files.serverCert).toMatch(/^-----BEGIN CERTIFICATE-----\n/);
    expect(files.caKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(files.serverKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(cliOutput).toContain(
      `TLS_CERT=${paths.serverCert} TLS_KEY=${paths.serverKey} npm start`,
    );
    expect(cliOutput).toContain(`--cacert ${paths.caCert}`);
  });

  it("makes the key files readable by the owner only (mode 0600)", () => {
    expect(statSync(paths.caKey).mode & 0o777).toBe(0o600);
    expect(statSync(paths.serverKey).mode & 0o777).toBe(0o600);
  });

  it("issues a server cert signed by the CA for localhost, 127.0.0.1 and ::1", () => {
    const ca = new X509Certificate(readFileSync(paths.caCert));
    const server = new X509Certificate(readFileSync(paths.serverCert));
    expect(ca.ca).toBe(true);
    expect(server.ca).toBe(false);
    expect(server.checkIssued(ca)).toBe(true);
    expect(server.verify(ca.publicKey)).toBe(true);
    expect(server.checkHost("localhost")).toBe("localhost");
    expect(server.checkIP("127.0.0.1")).toBe("127.0.0.1");
    expect(server.checkIP("::1")).toBe("::1");
    expect(server.checkHost("example.com")).toBeUndefined();
    expect(server.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"]); // extendedKeyUsage serverAuth
  });

  it("marks the CA critical CA:true with keyCertSign+cRLSign, valid 10 years; server at most 825 days", () => {
    const ca = new x509.X509Certificate(readFileSync(paths.caCert, "utf8"));
    const bc = ca.getExtension(x509.BasicConstraintsExtension);
    expect(bc?.ca).toBe(true);
    expect(bc?.critical).toBe(true);
    expect(ca.getExtension(x509.KeyUsagesExtension)?.usages).toBe(
      x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
    );
    const caYears = ca.notAfter.getUTCFullYear() - ca.notBefore.getUTCFullYear();
    expect(caYears).toBe(10);

    const server = new x509.X509Certificate(readFileSync(paths.serverCert, "utf8"));
    expect(server.getExtension(x509.KeyUsagesExtension)?.usages).toBe(
      x509.KeyUsageFlags.digitalSignature,
    );
    const days = (server.notAfter.getTime() - server.notBefore.getTime()) / DAY_MS;
    expect(days).toBeGreaterThan(365);
    expect(days).toBeLessThanOrEqual(SERVER_VALIDITY_DAYS);
    expect(server.notBefore.getTime()).toBeLessThanOrEqual(Date.now());
  });

  it("completes a TLS handshake when the client trusts ca.crt", async () => {
    const server = await startTlsServer(paths);
    try {
      const ca = readFileSync(paths.caCert);
      await expect(handshake(server, { ca, servername: "localhost" })).resolves.toBe(true);
      // No SNI: Node checks the IP SAN against the address connected to.
      await expect(handshake(server, { ca })).resolves.toBe(true);
    } finally {
      server.close();
    }
  });

  it("fails the TLS handshake when the client does not trust ca.crt", async () => {
    const server = await startTlsServer(paths);
    try {
      await expect(handshake(server, { servername: "localhost" })).rejects.toMatchObject({
        code: expect.stringMatching(/SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/),
      });
      // Trusting the CA does not make the cert valid for other names.
      await expect(
        handshake(server, { ca: readFileSync(paths.caCert), servername: "example.com" }),
      ).rejects.toMatchObject({ code: "ERR_TLS_CERT_ALTNAME_INVALID" });
    } finally {
      server.close();
    }
  });

  it("does not overwrite an existing CA without --force, and replaces both with --force", async () => {
    const out = tempDir();
    const first = await runCli([], { CERTS_DIR: out }); // $CERTS_DIR works like --out
    expect(first.code).toBe(0);
    const before = read(certPaths(out));

    const again = await runCli(["--out", out]);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already exists/);
    expect(again.stdout).toMatch(/--force/);
    expect(read(certPaths(out))).toEqual(before);

    const forced = await runCli(["--out", out, "--force"]);
    expect(forced.code).toBe(0);
    const after = read(certPaths(out));
    expect(after.caCert).not.toBe(before.caCert);
    expect(after.caKey).not.toBe(before.caKey);
    expect(after.serverCert).not.toBe(before.serverCert);
    const ca = new X509Certificate(after.caCert);
    expect(new X509Certificate(after.serverCert).checkIssued(ca)).toBe(true);
    expect(statSync(certPaths(out).caKey).mode & 0o777).toBe(0o600);
  });

  it("re-issues a missing server cert from the existing CA", async () => {
    const out = tempDir();
    await ensureCerts({ dir: out });
    const before = read(certPaths(out));
    rmSync(certPaths(out).serverCert);

    const result = await ensureCerts({ dir: out });
    expect(result.outcome).toBe("reissued");
    const after = read(certPaths(out));
    expect(after.caCert).toBe(before.caCert);
    expect(after.caKey).toBe(before.caKey);
    expect(after.serverKey).not.toBe(before.serverKey);
    const server = new X509Certificate(after.serverCert);
    expect(server.verify(new X509Certificate(after.caCert).publicKey)).toBe(true);
  });

  it("re-issues an expired server cert from the existing CA", async () => {
    const out = tempDir();
    const threeYearsAgo = new Date(Date.now() - 3 * 365 * DAY_MS);
    await ensureCerts({ dir: out, now: threeYearsAgo });
    const before = read(certPaths(out));
    expect(new Date(new X509Certificate(before.serverCert).validTo).getTime()).toBeLessThan(
      Date.now(),
    );

    const result = await ensureCerts({ dir: out });
    expect(result.outcome).toBe("reissued");
    expect(result.reason).toMatch(/expired/);
    const after = read(certPaths(out));
    expect(after.caCert).toBe(before.caCert);
    const server = new X509Certificate(after.serverCert);
    expect(new Date(server.validTo).getTime()).toBeGreaterThan(Date.now());
    expect(server.checkIssued(new X509Certificate(after.caCert))).toBe(true);
  });

  it("refuses to re-issue without ca.key and points at --force", async () => {
    const out = tempDir();
    await ensureCerts({ dir: out });
    rmSync(certPaths(out).caKey);
    rmSync(certPaths(out).serverCert);

    const result = await runCli(["--out", out]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/ca\.key is missing.*--force/);
  });
});
