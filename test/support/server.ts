import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { pino } from "pino";
import { type App, build } from "../../server/src/app.js";
import { loadConfig } from "../../server/src/config.js";
import { createLogger } from "../../server/src/logger.js";
import { openStore } from "../../server/src/storage/index.js";
import type { Store } from "../../server/src/storage/store.js";

/** The repository root, for spawning the real entry point. */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** A Switchboard server running in this process on 127.0.0.1 and a free port. */
export interface TestServer {
  readonly url: string;
  readonly port: number;
  readonly app: App;
  readonly store: Store;
  readonly dataDir: string;
  /** Shuts the server down and removes its data dir unless it was given. */
  close(): Promise<void>;
}

/** Makes a fresh temporary data directory. */
export function tempDataDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "switchboard-test-"));
}

/**
 * Test defaults: a fixed admin, and rate limits high enough that only the
 * tests about rate limiting (which set their own) ever meet them.
 */
export const TEST_ENV: Readonly<Record<string, string>> = {
  ADMIN_USERNAMES: "admin",
  RATE_LIMIT_USER: "100000/1",
  RATE_LIMIT_PUBLIC: "100000/1",
  RATE_LIMIT_LOGIN: "100000/1",
  RATE_LIMIT_REGISTER: "100000/1",
  RATE_LIMIT_CHAT: "100000/1",
  MAX_STREAMS_PER_USER: "100000",
  MAX_STREAMS_PER_ANONYMOUS_IP: "100000",
  LOGIN_FAILS_PER_ACCOUNT: "100000/1",
  LOGIN_FAILS_PER_ACCOUNT_AND_IP: "100000",
  LOGIN_FAILS_PER_IP: "100000/1",
};

/**
 * Starts the real app (the same `build` as production) on port 0. `env`
 * overrides configuration variables, exactly as the environment would.
 */
export async function startTestServer(
  options: {
    env?: Record<string, string>;
    dataDir?: string;
    /** Wraps the real store, e.g. to count or slow down reads, or to inject a bug. */
    wrapStore?: (store: Store) => Store;
    /** Receives every log line (JSON) instead of discarding them. */
    logLines?: Array<Record<string, unknown>>;
    /** Replaces argon2id's production parameters (bulk-import tests want cheap hashes). */
    hashPassword?: (password: string) => Promise<string>;
    /** Replaces argon2id verification, e.g. to count the password checks. */
    verifyPassword?: (phc: string, password: string) => Promise<boolean>;
    /** Serves this already open store (several servers can share one) instead of opening one. */
    store?: Store;
    /** Serves the web app from this directory (default: web/dist, when built). */
    webRoot?: string;
  } = {},
): Promise<TestServer> {
  const dataDir = options.dataDir ?? (await tempDataDir());
  const config = loadConfig({
    NODE_ENV: "test",
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: dataDir,
    LOG_LEVEL: "silent",
    LOG_FORMAT: "json",
    ...TEST_ENV,
    ...options.env,
  });
  const lines = options.logLines;
  const logger = lines
    ? pino({ level: "debug" }, { write: (line: string) => lines.push(JSON.parse(line)) })
    : createLogger(config.log);
  const realStore =
    options.store ??
    (await openStore({ dataDir: config.dataDir, databaseUrl: config.databaseUrl }));
  const store = options.wrapStore ? options.wrapStore(realStore) : realStore;
  const app = await build(config, {
    store,
    logger,
    ...(options.hashPassword ? { hashPassword: options.hashPassword } : {}),
    ...(options.verifyPassword ? { verifyPassword: options.verifyPassword } : {}),
    ...(options.webRoot ? { webRoot: options.webRoot } : {}),
  });
  const url = (await app.listen()).replace("localhost", "127.0.0.1");
  return {
    url,
    port: Number(new URL(url).port),
    app,
    store,
    dataDir,
    async close() {
      await app.shutdown();
      if (!options.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A Switchboard server running as a child process (`node server/src/main.ts`). */
export interface SpawnedServer {
  readonly url: string;
  readonly child: ChildProcess;
  /** Every JSON log line the server printed so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Resolves with the exit code (or the signal name) when the process ends. */
  readonly exited: Promise<number | string>;
  /** Everything the process wrote to stderr so far (crashes land here). */
  stderr(): string;
}

/**
 * Spawns the real entry point with `env` on port 0 and waits for its
 * "listening" log line. Rejects if the process exits first.
 */
export async function spawnServer(
  env: Record<string, string>,
  /** What node runs (default: the TypeScript entry point through tsx). */
  entry: readonly string[] = ["--import", "tsx", "server/src/main.ts"],
  /** `detached`: the process leads a process group of its own (as a terminal's job does). */
  options: { readonly detached?: boolean } = {},
): Promise<SpawnedServer> {
  const child = spawn(process.execPath, [...entry], {
    cwd: ROOT,
    detached: options.detached === true,
    env: {
      ...process.env,
      NODE_ENV: "test",
      HOST: "127.0.0.1",
      PORT: "0",
      LOG_FORMAT: "json",
      LOG_LEVEL: "info",
      ...TEST_ENV,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"));
  });
  const url = await new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    lines.on("line", (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (typeof entry.url === "string") resolve(entry.url.replace("localhost", "127.0.0.1"));
      } catch {
        // Not a log line; ignore.
      }
    });
    exited.then((code) =>
      reject(new Error(`server exited (${code}) before listening:\n${stderr}`)),
    );
  });
  return { url, child, logs, exited, stderr: () => stderr };
}
