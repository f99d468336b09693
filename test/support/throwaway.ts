import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { chown, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import pg from "pg";
import { describe, it } from "vitest";

/**
 * Throwaway PostgreSQL clusters and Redis servers for tests that stop,
 * kill and restart their dependencies: each on its own free port and in its
 * own temporary folder, never the machine's shared 5432 / 6379, removed
 * after. When the binaries are absent the suite is skipped loudly, except
 * under CI=true, where a failing test says what is missing.
 */

const run = promisify(execFile);
const IN_CI = process.env.CI === "true";

/** Where PostgreSQL's server binaries live (override: TEST_PG_BIN). */
export const PG_BIN = process.env.TEST_PG_BIN ?? "/usr/lib/postgresql/15/bin";
/** The redis-server binary (override: TEST_REDIS_SERVER). */
export const REDIS_SERVER = process.env.TEST_REDIS_SERVER ?? "/usr/bin/redis-server";

/** A port nobody listens on right now. */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (typeof address !== "object" || address === null) throw new Error("no port");
  return address.port;
}

/**
 * Says whether `binaries` exist; when some are missing, warns loudly (and,
 * under CI=true, adds a failing test named after `suite`).
 */
export function requireBinaries(suite: string, binaries: readonly string[]): boolean {
  const missing = binaries.filter((b) => !existsSync(b));
  if (missing.length === 0) return true;
  if (IN_CI) {
    describe(suite, () => {
      it("needs its dependency binaries under CI=true", () => {
        throw new Error(`CI=true but missing: ${missing.join(", ")}`);
      });
    });
  } else {
    console.warn(
      `\n!!! SKIPPING the ${suite} tests: missing ${missing.join(", ")}.\n` +
        "!!! Install PostgreSQL 15 / Redis to run them; under CI=true they fail instead.\n",
    );
  }
  return false;
}

/** A private PostgreSQL cluster (trust auth, user `postgres`, database `postgres`). */
export interface PgCluster {
  readonly port: number;
  readonly url: string;
  /** `pg_ctl start -w`: resolves once it accepts connections. */
  start(): Promise<void>;
  /** `pg_ctl -m immediate stop` (a crash, as far as clients can tell). */
  stop(): Promise<void>;
  /** Stops it and removes its folder. Idempotent. */
  destroy(): Promise<void>;
}

/** As root, PostgreSQL refuses to run: run its binaries as `postgres`. */
function asPostgres(binary: string, args: readonly string[]): [string, string[]] {
  return process.getuid?.() === 0
    ? ["runuser", ["-u", "postgres", "--", join(PG_BIN, binary), ...args]]
    : [join(PG_BIN, binary), [...args]];
}

async function pgTool(binary: string, args: readonly string[]): Promise<void> {
  const [file, argv] = asPostgres(binary, args);
  await run(file, argv, { timeout: 60_000 });
}

/** `initdb`s a fresh cluster into a temporary folder and starts it on a free port. */
export async function startPgCluster(): Promise<PgCluster> {
  const dir = await mkdtemp(join(tmpdir(), "switchboard-pg-"));
  if (process.getuid?.() === 0) {
    const { stdout } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    await chown(dir, Number(stdout.trim()), Number(gid.trim()));
  }
  const data = join(dir, "data");
  const port = await freePort();
  await pgTool("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
  const options = [
    `-p ${port}`,
    "-c listen_addresses=127.0.0.1",
    `-c unix_socket_directories=${dir}`,
    "-c fsync=off",
    "-c full_page_writes=off",
    "-c max_connections=60",
  ].join(" ");
  let running = false;
  // Should the test process end without afterAll (a crash, a timeout), the
  // cluster must not outlive it.
  const onExit = () => {
    if (!running) return;
    const [file, argv] = asPostgres("pg_ctl", ["-D", data, "-m", "immediate", "stop"]);
    try {
      execFileSync(file, argv, { stdio: "ignore", timeout: 10_000 });
    } catch {
      // Already gone.
    }
  };
  process.once("exit", onExit);
  const cluster: PgCluster = {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async start() {
      await pgTool("pg_ctl", ["-D", data, "-o", options, "-l", join(dir, "log"), "-w", "start"]);
      running = true;
    },
    async stop() {
      running = false;
      await pgTool("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]);
    },
    async destroy() {
      process.off("exit", onExit);
      if (running) await cluster.stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await cluster.start();
  } catch (err) {
    await cluster.destroy();
    throw err;
  }
  return cluster;
}

/** Runs one statement on `url` with a short-lived client. */
export async function pgQuery<T extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<T[]> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 });
  client.on("error", () => undefined);
  await client.connect();
  try {
    return (await client.query<T>(text, values)).rows;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** A private redis-server (no persistence), restartable on the same port. */
export interface RedisServer {
  readonly port: number;
  readonly url: string;
  /** Starts it (again) and resolves once it answers PING. */
  start(): Promise<void>;
  /** SIGKILL: every key is gone, every connection drops. */
  kill(): Promise<void>;
  /** Kills it. Idempotent. */
  destroy(): Promise<void>;
}

/** Starts a redis-server on a free port. */
export async function startRedisServer(): Promise<RedisServer> {
  const port = await freePort();
  let child: ChildProcess | undefined;
  const onExit = () => child?.kill("SIGKILL");
  process.once("exit", onExit);
  const server: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = spawn(
        REDIS_SERVER,
        ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        { stdio: "ignore" },
      );
      const deadline = Date.now() + 10_000;
      for (;;) {
        const probe = new Redis({
          port,
          host: "127.0.0.1",
          lazyConnect: true,
          maxRetriesPerRequest: 0,
          retryStrategy: () => null,
        });
        probe.on("error", () => undefined);
        try {
          await probe.connect();
          if ((await probe.ping()) === "PONG") return;
        } catch {
          if (Date.now() > deadline) throw new Error(`redis-server on ${port} did not start`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        } finally {
          probe.disconnect();
        }
      }
    },
    async kill() {
      const current = child;
      child = undefined;
      if (current === undefined || current.exitCode !== null) return;
      const exited = new Promise((resolve) => current.once("exit", resolve));
      current.kill("SIGKILL");
      await exited;
    },
    destroy() {
      process.off("exit", onExit);
      return server.kill();
    },
  };
  await server.start();
  return server;
}
