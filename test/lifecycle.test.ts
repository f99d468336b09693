import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import { promisify } from "node:util";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/health/v1/health_pb.js";
import { AuthService } from "../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { bearer, registerAndLogin } from "./support/auth.js";
import { ROOT, type SpawnedServer, spawnServer, tempDataDir } from "./support/server.js";

const run = promisify(execFile);
const spawned: SpawnedServer[] = [];
const dirs: string[] = [];

async function start(env: Record<string, string>): Promise<SpawnedServer> {
  const server = await spawnServer(env);
  spawned.push(server);
  return server;
}

afterEach(async () => {
  for (const s of spawned.splice(0)) {
    if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill("SIGKILL");
    await s.exited;
  }
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe("the server process", () => {
  it("ends an open WatchUsers with Unavailable on SIGTERM and exits 0 within the grace period", async () => {
    const dataDir = await tempDataDir();
    dirs.push(dataDir);
    const server = await start({ DATA_DIR: dataDir, SHUTDOWN_GRACE_MS: "3000" });
    const { accessToken } = await registerAndLogin(server.url, { username: "early" });
    const transport = createGrpcTransport({
      baseUrl: server.url,
      interceptors: [bearer(accessToken)],
    });
    const users = createClient(UserService, transport);
    const health = createClient(Health, transport);

    const seen: string[] = [];
    const watch = (async () => {
      for await (const item of users.watchUsers({})) seen.push(item.user?.username ?? "");
    })().then(
      () => undefined,
      (e: unknown) => ConnectError.from(e),
    );
    const statuses: ServingStatus[] = [];
    const healthWatch = (async () => {
      for await (const res of health.watch({ service: "" })) statuses.push(res.status);
    })().catch(() => undefined);
    await expect.poll(() => seen.length + statuses.length).toBe(2);

    const sentAt = Date.now();
    server.child.kill("SIGTERM");
    const [code, err] = await Promise.all([server.exited, watch]);
    const tookMs = Date.now() - sentAt;
    await healthWatch;

    expect(seen).toEqual(["early"]);
    expect(err).toBeInstanceOf(ConnectError);
    expect((err as ConnectError).code).toBe(Code.Unavailable);
    expect(statuses).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    expect(code).toBe(0);
    expect(tookMs).toBeLessThan(3000 + 1500);
    expect(server.logs.some((l) => l.msg === "shutdown complete")).toBe(true);
  });

  it("keeps users across a restart on the same DATA_DIR", async () => {
    const dataDir = await tempDataDir();
    dirs.push(dataDir);
    const first = await start({ DATA_DIR: dataDir });
    const firstClient = createClient(UserService, createGrpcTransport({ baseUrl: first.url }));
    const { user } = await firstClient.registerUser({
      username: "durable",
      email: "durable@example.com",
      password: "correct horse",
      displayName: "Durable Dora",
    });
    const login = await createClient(
      AuthService,
      createGrpcTransport({ baseUrl: first.url }),
    ).login({
      username: "durable",
      password: "correct horse",
    });
    first.child.kill("SIGTERM");
    expect(await first.exited).toBe(0);

    // Same data dir: the user, the signing key and the session all survive.
    const second = await start({ DATA_DIR: dataDir });
    const secondClient = createClient(
      UserService,
      createGrpcTransport({ baseUrl: second.url, interceptors: [bearer(login.accessToken)] }),
    );
    const { user: again } = await secondClient.getUser({ id: user!.id });
    expect(again).toEqual(user);
    const refreshed = await createClient(
      AuthService,
      createGrpcTransport({ baseUrl: second.url }),
    ).refresh({ refreshToken: login.refreshToken });
    expect(refreshed.accessToken).not.toBe("");
    const dup = await secondClient
      .registerUser({ username: "DURABLE", email: "other@example.com", password: "correct horse" })
      .catch((e: unknown) => ConnectError.from(e));
    expect((dup as ConnectError).code).toBe(Code.AlreadyExists);
  });

  it("refuses bad configuration with a clear message, exit code 2 and no stack trace", async () => {
    const err = await run(process.execPath, ["--import", "tsx", "server/src/main.ts"], {
      cwd: ROOT,
      env: { ...process.env, PORT: "http", DATABASE_URL: "mysql://db", LOG_FORMAT: "json" },
      timeout: 20_000,
    }).catch((e: { code: number; stderr: string }) => e);
    const { code, stderr } = err as { code: number; stderr: string };
    expect(code).toBe(2);
    expect(stderr).toContain("invalid configuration");
    expect(stderr).toContain('PORT: must be a number (got "http")');
    expect(stderr).toContain("DATABASE_URL: must be a postgres:// or postgresql:// URL");
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  it("exits 1 with a clear log line when the database is unreachable", async () => {
    const err = await run(process.execPath, ["--import", "tsx", "server/src/main.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        PORT: "0",
        DATABASE_URL: "postgres://postgres@127.0.0.1:1/nowhere",
        LOG_FORMAT: "json",
      },
      timeout: 30_000,
    }).catch((e: { code: number; stdout: string }) => e);
    const { code, stdout } = err as { code: number; stdout: string };
    expect(code).toBe(1);
    expect(stdout).toMatch(/cannot open storage/);
  });
});
