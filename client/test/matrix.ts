import { readFileSync } from "node:fs";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { ensureCerts } from "../../scripts/lib/certs.js";
import {
  type CliTestServer,
  runCli,
  startCli,
  startCliTestServer,
  tempConfigDir,
} from "./support.js";

/**
 * Every subcommand over every protocol, in cleartext or with TLS (trusting
 * the CA from ensureCerts with --ca), each as a real `switchboard` process.
 * commands-cleartext.test.ts and commands-tls.test.ts run it (two files, so
 * the two modes run in parallel workers).
 */

const PROTOCOLS = ["grpc", "grpc-web", "connect"] as const;
const PASSWORD = "correct horse battery";

export function describeCommandsOver(mode: "cleartext" | "tls"): void {
  describe(`switchboard over ${mode}`, () => {
    let server: CliTestServer;
    let addr: string;
    let caPath = "";
    let adminDir: string;
    const tlsArgs = () => (mode === "tls" ? ["--ca", caPath] : []);

    beforeAll(async () => {
      let env: Record<string, string> = {};
      if (mode === "tls") {
        const { paths } = await ensureCerts({ dir: await tempConfigDir() });
        caPath = paths.caCert;
        env = { TLS_CERT: paths.serverCert, TLS_KEY: paths.serverKey };
      }
      server = await startCliTestServer({ env });
      addr = mode === "tls" ? `https://localhost:${server.port}` : server.url;
      adminDir = await tempConfigDir();
      const r = await runCli(
        ["--addr", addr, ...tlsArgs(), "register", "admin", "-e", "admin@example.com"].concat([
          "--password-stdin",
          "--login",
        ]),
        { configDir: adminDir, input: `${PASSWORD}\n` },
      );
      expect(r.code, r.stderr).toBe(0);
    });
    afterAll(() => server?.close());

    for (const protocol of PROTOCOLS) {
      it(`${protocol}: register, login, whoami, get, watch, import, logout`, async () => {
        const dir = await tempConfigDir();
        const globals = ["--addr", addr, "--protocol", protocol, ...tlsArgs()];
        const cli = (args: string[], input?: string, configDir = dir) =>
          runCli([...globals, ...args], { configDir, ...(input ? { input } : {}) });
        const name = `${mode}_${protocol.replace("-", "")}`;

        // register, then login separately
        let r = await cli(
          ["register", name, "-e", `${name}@example.com`, "-n", "Test User", "--password-stdin"],
          `${PASSWORD}\n`,
        );
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toMatch(
          new RegExp(`^registered \\S+\\t${name}\\t${name}@example.com\\tTest User\\t`),
        );
        r = await cli(["login", name, "--password-stdin"], `${PASSWORD}\n`);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain(`as ${name} (roles: user)`);
        const file = join(dir, "credentials.json");
        expect((await stat(file)).mode & 0o777).toBe(0o600);
        expect((await stat(dir)).mode & 0o077).toBe(0);

        // whoami: claims, then GetUser
        r = await cli(["--json", "whoami"]);
        expect(r.code, r.stderr).toBe(0);
        const me = JSON.parse(r.stdout) as {
          claims: { sub: string; name: string; roles: string[] };
          user: { id: string; username: string; email: string; displayName: string };
        };
        expect(me.claims).toMatchObject({ name, roles: ["user"] });
        expect(me.user).toMatchObject({
          id: me.claims.sub,
          username: name,
          displayName: "Test User",
        });
        r = await cli(["whoami"]);
        expect(r.stdout).toContain(`name:    ${name}`);

        // get: found and not found, in order; exit 4 when any is missing
        r = await cli(["get", me.claims.sub, "no-such-id"]);
        expect(r.code).toBe(4);
        expect(r.stdout.trim().split("\n")).toEqual([
          expect.stringMatching(new RegExp(`^${me.claims.sub}\\t${name}\\t`)),
          "no-such-id\tnot found",
        ]);
        expect(r.stderr).toContain("1 of 2 ids were not found");
        r = await cli(["--json", "get", me.claims.sub]);
        expect(r.code, r.stderr).toBe(0);
        expect(JSON.parse(r.stdout)).toMatchObject({ id: me.claims.sub, user: { username: name } });

        // watch: catches up (sees this user), then live (sees a new one)
        const watch = startCli([...globals, "--json", "watch"], { configDir: dir });
        await watch.waitFor(new RegExp(`"username":"${name}"`));
        const later = `${name}_later`;
        await createClient(
          UserService,
          createConnectTransport({
            baseUrl: addr,
            httpVersion: "1.1",
            nodeOptions: mode === "tls" ? { ca: readFileSync(caPath) } : {},
          }),
        ).registerUser({ username: later, email: `${later}@example.com`, password: PASSWORD });
        await watch.waitFor(new RegExp(`"username":"${later}"`));
        watch.child.kill("SIGTERM");
        const watched = (await watch.exited()).stdout
          .trim()
          .split("\n")
          .map((l) => JSON.parse(l));
        expect(watched.every((w: { cursor?: string }) => typeof w.cursor === "string")).toBe(true);
        const cursorBefore = watched.find(
          (w: { user: { username: string } }) => w.user.username === name,
        ).cursor;
        r = await cli(["watch", "--after", cursorBefore, "--count", "1"]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toMatch(new RegExp(`\\t${later}\\t.*\\t\\S+$`, "m"));

        // import: admin only
        const csv = join(dir, "users.csv");
        await writeFile(
          csv,
          `username,email,password,display_name\n${name}_i1,${name}_i1@example.com,${PASSWORD},One\n` +
            `${name}_i2,not-an-email,${PASSWORD},Two\n${name}_i3,${name}_i3@example.com,${PASSWORD},\n`,
        );
        r = await cli(["import", csv]);
        expect(r.code).toBe(3);
        expect(r.stderr).toMatch(/permission_denied/);
        r = await cli(["import", csv], undefined, adminDir);
        expect(r.code).toBe(5);
        expect(r.stdout).toContain("2 created, 1 failed");
        expect(r.stdout).toMatch(
          /^line 3: \S+_i2: invalid_argument: email: must be a valid email address$/m,
        );

        // logout: the server ends the session, the tokens are gone
        const stored = JSON.parse(await readFile(file, "utf8"));
        expect(Object.keys(stored.servers)).toEqual([new URL(addr).origin]);
        r = await cli(["logout"]);
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout).toContain(`logged out of ${new URL(addr).origin}`);
        r = await cli(["whoami"]);
        expect(r.code).toBe(3);
        expect(r.stderr).toContain("not logged in");
      }, 60_000);
    }

    if (mode === "tls") {
      for (const protocol of PROTOCOLS) {
        it(`${protocol}: without --ca the certificate is refused, clearly (exit 6)`, async () => {
          const r = await runCli(
            ["--addr", addr, "--protocol", protocol, "login", "admin", "--password-stdin"],
            { configDir: await tempConfigDir(), input: `${PASSWORD}\n` },
          );
          expect(r.code).toBe(6);
          expect(r.stderr).toMatch(/certificate/);
          expect(r.stderr).toMatch(/--ca/);
        });
      }

      it("--insecure connects without verifying, and says so loudly", async () => {
        const dir = await tempConfigDir();
        const r = await runCli(
          ["--addr", addr, "--insecure", "login", "admin", "--password-stdin"],
          { configDir: dir, input: `${PASSWORD}\n` },
        );
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).toMatch(
          /warning: --insecure: the server's TLS certificate is NOT verified/,
        );
      });
    }
  });
}
