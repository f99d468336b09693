import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { ensureCerts } from "../../scripts/lib/certs.js";
import {
  type BackgroundCli,
  type CliTestServer,
  runCli,
  startCli,
  startCliTestServer,
  tempConfigDir,
} from "./support.js";

/**
 * Two `switchboard chat` processes in one room, stdin piped, see each
 * other's lines: the bidi Chat call over gRPC and Connect (HTTP/2),
 * Subscribe + Send over gRPC-Web; in cleartext and with TLS.
 */

const PROTOCOLS = ["grpc", "grpc-web", "connect"] as const;
const PASSWORD = "correct horse battery";

for (const mode of ["cleartext", "tls"] as const) {
  describe(`switchboard chat over ${mode}`, () => {
    let server: CliTestServer;
    let globals: string[];
    const dirs: Record<string, string> = {};

    beforeAll(async () => {
      let env: Record<string, string> = {};
      let ca: Buffer | undefined;
      let caArgs: string[] = [];
      if (mode === "tls") {
        const { paths } = await ensureCerts({ dir: await tempConfigDir() });
        env = { TLS_CERT: paths.serverCert, TLS_KEY: paths.serverKey };
        ca = readFileSync(paths.caCert);
        caArgs = ["--ca", paths.caCert];
      }
      server = await startCliTestServer({ env });
      const addr = mode === "tls" ? `https://localhost:${server.port}` : server.url;
      globals = ["--addr", addr, ...caArgs];
      const users = createClient(
        UserService,
        createConnectTransport({
          baseUrl: addr,
          httpVersion: "1.1",
          nodeOptions: ca ? { ca } : {},
        }),
      );
      await Promise.all(
        ["alice", "bob"].map(async (name) => {
          await users.registerUser({
            username: name,
            email: `${name}@example.com`,
            password: PASSWORD,
          });
          dirs[name] = await tempConfigDir();
          const r = await runCli([...globals, "login", name, "--password-stdin"], {
            configDir: dirs[name],
            input: `${PASSWORD}\n`,
          });
          expect(r.code, r.stderr).toBe(0);
        }),
      );
    });
    afterAll(() => server?.close());

    for (const protocol of PROTOCOLS) {
      it(`${protocol}: two chat processes see each other's lines, then leave when stdin ends`, async () => {
        const room = `room-${mode}-${protocol}`;
        const chat = (name: string, extra: string[] = []): BackgroundCli =>
          startCli(
            [...globals, "--protocol", protocol, ...extra, "chat", room, "--listen-for", "2"],
            {
              configDir: dirs[name] as string,
            },
          );
        const alice = chat("alice");
        const bob = chat("bob", ["--json"]);
        const how = protocol === "grpc-web" ? "Subscribe \\+ Send" : "Chat stream";
        await alice.waitFor(new RegExp(`joined ${room} \\(${protocol}, ${how}\\)`), {
          stream: "stderr",
        });
        await bob.waitFor(new RegExp(`joined ${room}`), { stream: "stderr" });

        // bob speaks; alice answers once she has seen it, then quits; bob
        // ends his input once he has seen alice's lines.
        bob.child.stdin.write("hi from bob\n");
        await alice.waitFor(/\] bob: hi from bob$/);
        alice.child.stdin.end("hello from alice\nsecond line\n/quit\nnever sent\n");
        await bob.waitFor(/"text":"second line"/);
        bob.child.stdin.end();
        const [a, b] = await Promise.all([alice.exited(20_000), bob.exited(20_000)]);
        expect(a.code, a.stderr).toBe(0);
        expect(b.code, b.stderr).toBe(0);

        // alice: human lines, with the sender's username
        expect(a.stdout).toMatch(/^\[\d\d:\d\d:\d\d\] bob: hi from bob$/m);
        expect(a.stdout).toMatch(/^\[\d\d:\d\d:\d\d\] alice: hello from alice$/m);
        expect(a.stdout).toMatch(/^\* in room-/m);
        expect(a.stdout).not.toContain("never sent");

        // bob: --json, one ChatResponse per line
        const frames = b.stdout
          .trim()
          .split("\n")
          .map(
            (l) =>
              JSON.parse(l) as {
                event?: { message?: { senderUsername: string; text: string } };
                ack?: unknown;
              },
          );
        const texts = frames.flatMap((f) =>
          f.event?.message ? [`${f.event.message.senderUsername}: ${f.event.message.text}`] : [],
        );
        expect(texts).toEqual(
          expect.arrayContaining([
            "alice: hello from alice",
            "alice: second line",
            "bob: hi from bob",
          ]),
        );
        expect(texts).not.toContain("alice: never sent");
        expect(frames.filter((f) => f.ack)).toHaveLength(1);
      }, 40_000);
    }
  });
}
