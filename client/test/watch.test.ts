import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, describe, expect, it } from "vitest";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { type SpawnedServer, spawnServer } from "../../test/support/server.js";
import { freePort, runCli, startCli, tempConfigDir } from "./support.js";

/**
 * `switchboard watch` survives a dropped connection: the server is killed
 * (SIGKILL, no goodbye) and started again on the same port; the watch
 * reconnects with backoff and resumes after its last cursor, so every user
 * appears exactly once.
 */

const PASSWORD = "correct horse battery";

describe("switchboard watch", () => {
  const servers: SpawnedServer[] = [];
  afterAll(async () => {
    for (const s of servers) {
      s.child.kill("SIGKILL");
      await s.exited;
    }
  });

  it("reconnects after the server dies and resumes from the last cursor: no gap, no duplicate", async () => {
    const port = await freePort();
    const env = {
      PORT: String(port),
      DATA_DIR: await tempConfigDir(),
      AUTH_SIGNING_KEY: Buffer.alloc(32, 9).toString("base64url"),
    };
    const start = async () => {
      const s = await spawnServer(env);
      servers.push(s);
      return s;
    };
    let server = await start();
    const addr = server.url;
    const dir = await tempConfigDir();
    const register = (username: string) =>
      createClient(
        UserService,
        createConnectTransport({ baseUrl: addr, httpVersion: "1.1" }),
      ).registerUser({
        username,
        email: `${username}@example.com`,
        password: PASSWORD,
      });

    const r = await runCli(
      [
        "--addr",
        addr,
        "register",
        "watcher",
        "-e",
        "watcher@example.com",
        "--password-stdin",
        "--login",
      ],
      { configDir: dir, input: `${PASSWORD}\n` },
    );
    expect(r.code, r.stderr).toBe(0);
    await register("before_drop");

    const watch = startCli(["--addr", addr, "--json", "watch"], { configDir: dir });
    await watch.waitFor(/"username":"before_drop"/);

    server.child.kill("SIGKILL");
    await server.exited;
    await watch.waitFor(/connection lost.*reconnecting in/, { stream: "stderr" });

    server = await start();
    await register("after_restart");
    await watch.waitFor(/"username":"after_restart"/, { timeoutMs: 30_000 });
    await register("live_again");
    await watch.waitFor(/"username":"live_again"/);
    watch.child.kill("SIGTERM");
    const result = await watch.exited();

    const usernames = result.stdout
      .trim()
      .split("\n")
      .map((line) => (JSON.parse(line) as { user: { username: string } }).user.username);
    expect(usernames).toEqual(["watcher", "before_drop", "after_restart", "live_again"]);
    expect(result.stderr).toMatch(/resuming after cursor \S+/);
  }, 60_000);
});
