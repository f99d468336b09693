/**
 * Local development TLS: a private CA and a server certificate it signs for
 * localhost, 127.0.0.1 and ::1. Pure WebCrypto + @peculiar/x509; no openssl.
 */
import { createPrivateKey, X509Certificate as NodeX509, webcrypto } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto);

/** File names written into the output directory. */
export const CERT_FILES = Object.freeze({
  caCert: "ca.crt",
  caKey: "ca.key",
  serverCert: "server.crt",
  serverKey: "server.key",
});

/** Absolute-or-relative paths of the four files, as joined onto the output directory. */
export type CertPaths = { readonly [K in keyof typeof CERT_FILES]: string };

/** Names the server certificate is valid for. */
export const SERVER_NAMES = Object.freeze({
  dns: ["localhost"],
  ip: ["127.0.0.1", "::1"],
});

/** The CA is valid for 10 years. */
export const CA_VALIDITY_YEARS = 10;
/** Server certificates are valid for 825 days (Apple's limit for user-trusted CAs). */
export const SERVER_VALIDITY_DAYS = 825;
/** A server certificate this close to expiry is re-issued rather than kept. */
export const RENEW_BEFORE_DAYS = 30;

const DAY_MS = 86_400_000;
/** notBefore is backdated slightly so a clock a little behind still accepts new certs. */
const BACKDATE_MS = 5 * 60_000;
const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;

/** Options for {@link ensureCerts}. */
export interface CertsOptions {
  /** Directory for ca.crt, ca.key, server.crt and server.key; created if missing. */
  dir: string;
  /** Replace an existing CA (and hence the server certificate too). */
  force?: boolean;
  /** The current time; tests move it to make certificates that are already expired. */
  now?: Date;
}

/**
 * What {@link ensureCerts} did: made a new CA and server cert, re-issued only the
 * server cert from the existing CA, or left everything as it was.
 */
export type CertsOutcome = "created" | "reissued" | "unchanged";

/** Result of {@link ensureCerts}. */
export interface CertsResult {
  outcome: CertsOutcome;
  /** Why the server certificate was re-issued (only for "reissued"). */
  reason?: string;
  paths: CertPaths;
  /** Paths actually written, in the order written. */
  written: string[];
  caNotAfter: Date;
  serverNotAfter: Date;
}

/** A problem the user must fix (typically by passing --force); message is user-facing. */
export class CertsError extends Error {
  override name = "CertsError";
}

/**
 * Makes sure `dir` holds a local CA and a current server certificate signed by it.
 *
 * - No CA yet, or `force`: makes a new CA and server certificate (all four files).
 * - CA present: never touches it. Re-issues the server certificate from it when
 *   server.crt/server.key is missing, unreadable, not signed by this CA, does not
 *   match its key, or expires within {@link RENEW_BEFORE_DAYS} days.
 *
 * @throws {CertsError} when the server certificate must be re-issued but the
 *   existing CA cannot sign it (ca.key missing or mismatched, CA expired).
 */
export async function ensureCerts(options: CertsOptions): Promise<CertsResult> {
  const now = options.now ?? new Date();
  const paths = certPaths(options.dir);
  mkdirSync(options.dir, { recursive: true });

  if (options.force || !existsSync(paths.caCert)) {
    const ca = await createCa(now);
    const server = await createServerCert(ca, now);
    const written = [
      writePem(paths.caKey, ca.keyPem, 0o600),
      writePem(paths.caCert, ca.cert.toString("pem"), 0o644),
      writePem(paths.serverKey, server.keyPem, 0o600),
      writePem(paths.serverCert, server.cert.toString("pem"), 0o644),
    ];
    return {
      outcome: "created",
      paths,
      written,
      caNotAfter: ca.cert.notAfter,
      serverNotAfter: server.cert.notAfter,
    };
  }

  const caPem = readFileSync(paths.caCert, "utf8");
  let caNode: NodeX509;
  try {
    caNode = new NodeX509(caPem);
  } catch {
    throw new CertsError(`${paths.caCert} is not a PEM certificate; rerun with --force.`);
  }
  const reason = serverCertProblem(paths, caNode, now);
  if (reason === undefined) {
    const server = new x509.X509Certificate(readFileSync(paths.serverCert, "utf8"));
    return {
      outcome: "unchanged",
      paths,
      written: [],
      caNotAfter: new x509.X509Certificate(caPem).notAfter,
      serverNotAfter: server.notAfter,
    };
  }

  const ca = await loadCa(paths, caPem, caNode, now);
  const server = await createServerCert(ca, now);
  const written = [
    writePem(paths.serverKey, server.keyPem, 0o600),
    writePem(paths.serverCert, server.cert.toString("pem"), 0o644),
  ];
  return {
    outcome: "reissued",
    reason,
    paths,
    written,
    caNotAfter: ca.cert.notAfter,
    serverNotAfter: server.cert.notAfter,
  };
}

/** The four file paths inside `dir`. */
export function certPaths(dir: string): CertPaths {
  return {
    caCert: join(dir, CERT_FILES.caCert),
    caKey: join(dir, CERT_FILES.caKey),
    serverCert: join(dir, CERT_FILES.serverCert),
    serverKey: join(dir, CERT_FILES.serverKey),
  };
}

interface Issuer {
  cert: x509.X509Certificate;
  privateKey: webcrypto.CryptoKey;
}

interface Issued {
  cert: x509.X509Certificate;
  keyPem: string;
}

async function createCa(now: Date): Promise<Issuer & Issued> {
  const keys = await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  const notAfter = new Date(notBefore);
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + CA_VALIDITY_YEARS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: "CN=Switchboard Local Development CA, O=Switchboard",
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      // pathLength 0: this CA signs leaf certificates only.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, privateKey: keys.privateKey, keyPem: await exportKeyPem(keys.privateKey) };
}

async function createServerCert(ca: Issuer, now: Date): Promise<Issued> {
  const keys = await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
  const notBefore = new Date(now.getTime() - BACKDATE_MS);
  // Never outlive the CA: a leaf valid past its issuer is rejected anyway.
  const notAfter = new Date(
    Math.min(notBefore.getTime() + SERVER_VALIDITY_DAYS * DAY_MS, ca.cert.notAfter.getTime()),
  );
  const cert = await x509.X509CertificateGenerator.create({
    subject: "CN=localhost, O=Switchboard",
    issuer: ca.cert.subjectName,
    notBefore,
    notAfter,
    publicKey: keys.publicKey,
    signingKey: ca.privateKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      // ECDSA keys sign the handshake; keyEncipherment only applies to RSA key exchange.
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
      new x509.SubjectAlternativeNameExtension([
        ...SERVER_NAMES.dns.map((value) => ({ type: "dns" as const, value })),
        ...SERVER_NAMES.ip.map((value) => ({ type: "ip" as const, value })),
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert, keyPem: await exportKeyPem(keys.privateKey) };
}

/** Loads the existing CA for signing, or explains why it cannot be used. */
async function loadCa(
  paths: CertPaths,
  caPem: string,
  caNode: NodeX509,
  now: Date,
): Promise<Issuer> {
  const fix = "rerun with --force to make a new CA (clients must then trust the new ca.crt)";
  if (!caNode.ca) throw new CertsError(`${paths.caCert} is not a CA certificate; ${fix}.`);
  if (new Date(caNode.validTo).getTime() <= now.getTime()) {
    throw new CertsError(`${paths.caCert} expired on ${caNode.validTo}; ${fix}.`);
  }
  let keyPem: string;
  try {
    keyPem = readFileSync(paths.caKey, "utf8");
  } catch {
    throw new CertsError(
      `${paths.caKey} is missing, so ${paths.serverCert} cannot be re-issued from ${paths.caCert}; ${fix}.`,
    );
  }
  try {
    if (!caNode.checkPrivateKey(createPrivateKey(keyPem))) throw new Error("mismatch");
    const der = x509.PemConverter.decodeFirst(keyPem);
    const privateKey = await webcrypto.subtle.importKey("pkcs8", der, KEY_ALGORITHM, false, [
      "sign",
    ]);
    return { cert: new x509.X509Certificate(caPem), privateKey };
  } catch {
    throw new CertsError(
      `${paths.caKey} is not the ECDSA P-256 key of ${paths.caCert} (was it made by this script?); ${fix}.`,
    );
  }
}

/** Why the server certificate must be re-issued, or undefined when it is fine. */
function serverCertProblem(paths: CertPaths, ca: NodeX509, now: Date): string | undefined {
  if (!existsSync(paths.serverCert)) return `${paths.serverCert} is missing`;
  if (!existsSync(paths.serverKey)) return `${paths.serverKey} is missing`;
  let cert: NodeX509;
  try {
    cert = new NodeX509(readFileSync(paths.serverCert));
  } catch {
    return `${paths.serverCert} is not a PEM certificate`;
  }
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    return `${paths.serverCert} was not signed by ${paths.caCert}`;
  }
  try {
    if (!cert.checkPrivateKey(createPrivateKey(readFileSync(paths.serverKey)))) {
      return `${paths.serverKey} does not match ${paths.serverCert}`;
    }
  } catch {
    return `${paths.serverKey} is not a PEM private key`;
  }
  const notAfter = new Date(cert.validTo).getTime();
  if (notAfter <= now.getTime()) return `${paths.serverCert} expired on ${cert.validTo}`;
  if (notAfter - now.getTime() < RENEW_BEFORE_DAYS * DAY_MS) {
    return `${paths.serverCert} expires on ${cert.validTo}`;
  }
  if (new Date(cert.validFrom).getTime() > now.getTime()) {
    return `${paths.serverCert} is not valid until ${cert.validFrom}`;
  }
  const names = [
    ...SERVER_NAMES.dns.map((n) => cert.checkHost(n)),
    ...SERVER_NAMES.ip.map((n) => cert.checkIP(n)),
  ];
  if (names.some((n) => n === undefined)) {
    return `${paths.serverCert} does not cover ${[...SERVER_NAMES.dns, ...SERVER_NAMES.ip].join(", ")}`;
  }
  return undefined;
}

async function exportKeyPem(key: webcrypto.CryptoKey): Promise<string> {
  const pkcs8 = await webcrypto.subtle.exportKey("pkcs8", key);
  return x509.PemConverter.encode(pkcs8, "PRIVATE KEY");
}

/**
 * Writes via a temp file and rename, so the final file has `mode` even when it
 * replaces an existing one, and a crash never leaves a half-written PEM.
 */
function writePem(path: string, pem: string, mode: number): string {
  const tmp = `${path}.${process.pid}.tmp`;
  rmSync(tmp, { force: true });
  try {
    writeFileSync(tmp, pem.endsWith("\n") ? pem : `${pem}\n`, { mode, flag: "wx" });
    chmodSync(tmp, mode); // the umask may have narrowed it
    renameSync(tmp, path);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  return path;
}
