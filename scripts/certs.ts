/**
 * `npm run certs [-- --out DIR] [-- --force]`: makes a local development CA and
 * a server certificate for localhost, 127.0.0.1 and ::1 (see lib/certs.ts).
 *
 * Writes DIR/ca.crt, ca.key, server.crt and server.key; DIR is --out, else
 * $CERTS_DIR, else ./certs. An existing CA is kept unless --force; a missing or
 * expiring server certificate is re-issued from it.
 */
import { isAbsolute, relative } from "node:path";
import { parseArgs } from "node:util";
import { CertsError, type CertsResult, ensureCerts, SERVER_NAMES } from "./lib/certs.js";

const USAGE = `Usage: npm run certs -- [--out DIR] [--force]

  --out DIR   where to write ca.crt, ca.key, server.crt, server.key
              (default: $CERTS_DIR, else ./certs)
  --force     replace an existing CA and server certificate
`;

/** Parses argv, runs the generator and prints the outcome; returns the exit code. */
async function main(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let values: { out?: string | undefined; force?: boolean | undefined; help?: boolean | undefined };
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        out: { type: "string", short: "o" },
        force: { type: "boolean", short: "f" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const dir = values.out || env.CERTS_DIR || "certs";
  try {
    const result = await ensureCerts({ dir, force: values.force ?? false });
    process.stdout.write(report(result));
    return 0;
  } catch (err) {
    if (err instanceof CertsError) {
      process.stderr.write(`certs: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}

/** A path as the user would type it from the current directory. */
function show(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel === "" || rel.startsWith("..") || isAbsolute(rel) ? path : rel;
}

function day(d: Date): string {
  return d.toISOString().slice(0, 10);
}

function report(r: CertsResult): string {
  const p = {
    caCert: show(r.paths.caCert),
    caKey: show(r.paths.caKey),
    serverCert: show(r.paths.serverCert),
    serverKey: show(r.paths.serverKey),
  };
  const names = [...SERVER_NAMES.dns, ...SERVER_NAMES.ip].join(", ");
  const lines: string[] = [];
  switch (r.outcome) {
    case "created":
      lines.push("Created a new local CA and a server certificate signed by it:");
      break;
    case "reissued":
      lines.push(
        `Kept the existing CA ${p.caCert}; re-issued the server certificate (${r.reason}):`,
      );
      break;
    case "unchanged":
      lines.push(
        `${p.caCert} already exists and ${p.serverCert} is current; nothing written.`,
        "(Pass --force to replace the CA and server certificate; clients must then trust the new CA.)",
      );
      break;
  }
  const wrote = new Set(r.written);
  const row = (path: string, shown: string, what: string) =>
    `  ${wrote.has(path) ? "wrote" : "kept "} ${shown.padEnd(Math.max(p.serverCert.length, p.caCert.length) + 1)} ${what}`;
  lines.push(
    row(
      r.paths.caCert,
      p.caCert,
      `CA certificate, valid until ${day(r.caNotAfter)}: clients trust this`,
    ),
    row(r.paths.caKey, p.caKey, "CA private key (mode 0600): keep it private"),
    row(
      r.paths.serverCert,
      p.serverCert,
      `server certificate for ${names}, valid until ${day(r.serverNotAfter)}`,
    ),
    row(r.paths.serverKey, p.serverKey, "server private key (mode 0600)"),
    "",
    "Serve TLS (gRPC, gRPC-Web and Connect over https on one port):",
    `  TLS_CERT=${p.serverCert} TLS_KEY=${p.serverKey} npm start`,
    "",
    `Clients trust ${p.caCert}, e.g.:`,
    `  buf curl --cacert ${p.caCert} https://localhost:8080/switchboard.user.v1.UserService/GetUser -d '{"id":"..."}'`,
    `  grpcurl -cacert ${p.caCert} localhost:8080 list`,
    `  NODE_EXTRA_CA_CERTS=${p.caCert} node client.js`,
    "",
  );
  return lines.join("\n");
}

process.exitCode = await main(process.argv.slice(2));
