import { spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hash } from "@node-rs/argon2";
import { afterAll } from "vitest";
import { ROOT, startTestServer, type TestServer } from "../../test/support/server.js";

/** The CLI entry point, run as a real subprocess. */
export const CLI = join(ROOT, "client/bin/switchboard.js");

/** What one CLI run produced. */
export interface CliResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly ms: number;
}

export interface RunOptions {
  /** SWITCHBOARD_CONFIG_DIR for this run. */
  readonly configDir: string;
  readonly env?: Record<string, string>;
  /** Written to stdin, which is then closed; default: stdin closed at once. */
  readonly input?: string;
  readonly timeoutMs?: number;
  /** Run under another program (e.g. /usr/bin/time -v). */
  readonly wrapper?: readonly string[];
}

/** Runs `node client/bin/switchboard.js …args` and collects its output. */
export function runCli(args: readonly string[], options: RunOptions): Promise<CliResult> {
  const started = Date.now();
  const command = [...(options.wrapper ?? []), process.execPath, CLI, ...args];
  const child = spawn(command[0] as string, command.slice(1), {
    cwd: ROOT,
    env: cliEnv(options),
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    stdout += c;
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => {
    stderr += c;
  });
  child.stdin.on("error", () => {});
  child.stdin.end(options.input ?? "");
  const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 20_000);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started });
    });
  });
}

/** The environment of a CLI run: no inherited SWITCHBOARD_* settings. */
export function cliEnv(options: {
  configDir: string;
  env?: Record<string, string>;
}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("SWITCHBOARD_")) env[k] = v;
  }
  return { ...env, SWITCHBOARD_CONFIG_DIR: options.configDir, ...options.env };
}

const tempDirs: string[] = [];
// Registered on the root suite of every test file that imports this module.
afterAll(() => {
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * A fresh temporary directory (credentials, certificates, input files, a
 * spawned server's data), removed after the test file.
 */
export async function tempConfigDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "switchboard-cli-"));
  tempDirs.push(dir);
  return dir;
}

/** Argon2id with tiny parameters: real, verifiable hashes, ~1 ms each instead of ~25 ms. */
export const cheapHash = (password: string) =>
  hash(password, { memoryCost: 1024, timeCost: 1, parallelism: 1 });

/** A server for CLI tests: the shared harness's, see startCliTestServer. */
export type CliTestServer = TestServer;

/**
 * The shared test server (same build, same TEST_ENV) with cheap argon2id
 * parameters, so bulk imports of thousands of valid users stay fast. The
 * CLI's behaviour does not depend on the hash cost.
 */
export function startCliTestServer(
  options: { env?: Record<string, string>; cheapHashing?: boolean } = {},
): Promise<CliTestServer> {
  return startTestServer({
    ...(options.env ? { env: options.env } : {}),
    ...(options.cheapHashing === false ? {} : { hashPassword: cheapHash }),
  });
}

/** A TCP port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** GNU time, for peak RSS, when installed. */
export const GNU_TIME = existsSync("/usr/bin/time") ? "/usr/bin/time" : undefined;

/** Parses "Maximum resident set size (kbytes): N" from `time -v`, or the CLI's debug line. */
export function peakRssKiB(stderr: string): number | undefined {
  const m =
    /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr) ?? /maxrss_kib=(\d+)/.exec(stderr);
  return m ? Number(m[1]) : undefined;
}

export { ROOT };

/** A CLI process running in the background (watch, chat). */
export interface BackgroundCli {
  readonly child: import("node:child_process").ChildProcessWithoutNullStreams;
  stdout(): string;
  stderr(): string;
  /** Resolves once stdout (or stderr) contains a line matching `pattern`. */
  waitFor(
    pattern: RegExp,
    options?: { timeoutMs?: number; stream?: "stdout" | "stderr" },
  ): Promise<string>;
  /** Resolves with the result when the process exits (killing it after `timeoutMs`). */
  exited(timeoutMs?: number): Promise<CliResult>;
}

export function startCli(args: readonly string[], options: RunOptions): BackgroundCli {
  const started = Date.now();
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    env: cliEnv(options),
    stdio: ["pipe", "pipe", "pipe"],
  });
  child.stdin.on("error", () => {});
  let out = "";
  let err = "";
  const waiters = new Set<() => void>();
  const poke = () => {
    for (const w of [...waiters]) w();
  };
  child.stdout.setEncoding("utf8").on("data", (c: string) => {
    out += c;
    poke();
  });
  child.stderr.setEncoding("utf8").on("data", (c: string) => {
    err += c;
    poke();
  });
  const closed = new Promise<CliResult>((resolve) => {
    child.once("close", (code, signal) =>
      resolve({ code, signal, stdout: out, stderr: err, ms: Date.now() - started }),
    );
  });
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitFor(pattern, { timeoutMs = 15_000, stream = "stdout" } = {}) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const text = stream === "stdout" ? out : err;
          const line = text.split("\n").find((l) => pattern.test(l));
          if (line !== undefined) {
            done();
            resolve(line);
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(
            new Error(
              `timed out waiting for ${pattern} on ${stream}\nstdout:\n${out}\nstderr:\n${err}`,
            ),
          );
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        closed.then(() => {
          if (waiters.has(check)) {
            check();
            if (waiters.has(check)) {
              done();
              reject(
                new Error(`process exited before ${pattern}\nstdout:\n${out}\nstderr:\n${err}`),
              );
            }
          }
        });
        check();
      });
    },
    exited(timeoutMs = 15_000) {
      const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
      return closed.finally(() => clearTimeout(timer));
    },
  };
}
