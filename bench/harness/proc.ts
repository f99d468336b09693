import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { createInterface } from "node:readline";

/** Repository root (the cwd of every child process). */
export const ROOT = new URL("../../", import.meta.url).pathname;

/** Which cores to pin to; `undefined` when pinning is off. */
export interface Pinning {
  readonly server: string;
  readonly load: string;
}

let pinning: Pinning | undefined;

/** Pins servers and load generators from now on (`undefined`: no pinning). */
export function setPinning(p: Pinning | undefined): void {
  pinning = p;
}

/** The command line with `taskset -c <cores>` in front when pinning is on. */
export function pinned(role: "server" | "load", cmd: string, args: string[]): [string, string[]] {
  if (!pinning) return [cmd, args];
  return ["taskset", ["-c", role === "server" ? pinning.server : pinning.load, cmd, ...args]];
}

/**
 * The Node flags `npm start` gives the server (scripts/server-node-flags.json),
 * given to EVERY server of the bench — Switchboard, grpc-js and bare alike —
 * so no server is measured with a tuning the others lack.
 */
export const SERVER_NODE_FLAGS: readonly string[] = JSON.parse(
  readFileSync(new URL("../../scripts/server-node-flags.json", import.meta.url), "utf8"),
) as string[];

const children = new Set<ChildProcess>();

/** Kills every child this runner started that is still running (on exit or crash). */
export function killAllChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

/** Spawns a tracked child process (killed if the runner exits first). */
export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once("exit", () => children.delete(child));
  return child;
}

/** A free TCP port on 127.0.0.1 (bound then released). */
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

/** Clock ticks per second for /proc/<pid>/stat (USER_HZ, 100 on Linux). */
const USER_HZ = 100;

/** CPU seconds (user + system) a process has used so far, from /proc; NaN if unknown. */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return Number.NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of stat(5) are utime and stime; the slice starts at field 3.
    return (Number(fields[11]) + Number(fields[12])) / USER_HZ;
  } catch {
    return Number.NaN;
  }
}

/** Busy CPU seconds (everything but idle and iowait) per core so far, from /proc/stat. */
export function coreBusy(): number[] {
  try {
    const out: number[] = [];
    for (const line of readFileSync("/proc/stat", "utf8").split("\n")) {
      const m = /^cpu(\d+)\s+(.*)$/.exec(line);
      if (!m) continue;
      const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = m[2]!
        .trim()
        .split(/\s+/)
        .map(Number);
      out[Number(m[1])] = (user + nice + system + irq + softirq + steal) / USER_HZ;
    }
    return out;
  } catch {
    return [];
  }
}

/** What a bench server reports on `stats`. */
export interface ServerStats {
  readonly memory: NodeJS.MemoryUsage;
  readonly counters: Record<string, unknown>;
}

/** A bench server (bench/servers/*.ts) running as a child process. */
export class ServerProc {
  readonly name: string;
  readonly child: ChildProcess;
  url = "";
  h1Url = "";
  #nextId = 1;
  #pending = new Map<string, (line: Record<string, unknown>) => void>();
  #stderr = "";
  readonly exited: Promise<number | string>;

  private constructor(name: string, child: ChildProcess) {
    this.name = name;
    this.child = child;
    this.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")),
    );
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-8000);
    });
  }

  /** The last lines the server wrote on stderr (for error messages). */
  get stderr(): string {
    return this.#stderr;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /**
   * Starts `node [SERVER_NODE_FLAGS] [nodeFlags] --import tsx <script>` pinned to the server
   * core and waits for its {"type":"ready"} line.
   */
  static async start(
    name: string,
    script: string,
    env: Record<string, string>,
    options: { nodeFlags?: string[]; timeoutMs?: number } = {},
  ): Promise<ServerProc> {
    const [cmd, args] = pinned("server", process.execPath, [
      ...SERVER_NODE_FLAGS,
      ...(options.nodeFlags ?? []),
      "--import",
      "tsx",
      script,
    ]);
    const child = track(
      spawn(cmd, args, {
        cwd: ROOT,
        env: { ...process.env, ...env },
        stdio: ["pipe", "pipe", "pipe"],
      }),
    );
    const proc = new ServerProc(name, child);
    const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${name}: not ready within ${options.timeoutMs ?? 30_000} ms`)),
        options.timeoutMs ?? 30_000,
      );
      proc.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`${name} exited (${code}) before it was ready:\n${proc.stderr}`));
      });
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (text) => {
        let line: Record<string, unknown>;
        try {
          line = JSON.parse(text) as Record<string, unknown>;
        } catch {
          return;
        }
        if (line.type === "ready") {
          clearTimeout(timer);
          resolve(line);
        } else if (typeof line.id === "string") {
          proc.#pending.get(line.id)?.(line);
          proc.#pending.delete(line.id);
        }
      });
    });
    try {
      const line = await ready;
      proc.url = String(line.url);
      proc.h1Url = typeof line.h1Url === "string" ? line.h1Url : proc.url;
    } catch (err) {
      child.kill("SIGKILL");
      throw err;
    }
    return proc;
  }

  /** Sends one control command and waits for its answer. */
  request(
    command: "stats" | "gc-stats" | "mark" | "stop",
    timeoutMs = 20_000,
  ): Promise<Record<string, unknown>> {
    const id = String(this.#nextId++);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${this.name}: no answer to "${command}" within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, (line) => {
        clearTimeout(timer);
        resolve(line);
      });
      this.child.stdin?.write(`${command} ${id}\n`);
    });
  }

  /** Counters and memory; after a full GC when `gc` (memory figures only: it perturbs load runs). */
  async stats(gc = false): Promise<ServerStats> {
    const line = await this.request(gc ? "gc-stats" : "stats");
    return line as unknown as ServerStats;
  }

  /** The server's monotonic clock in µs (the CPU profile's time base). */
  async mark(): Promise<number> {
    return Number((await this.request("mark")).hrtimeUs);
  }

  /** Graceful stop; returns the final stats (undefined if it had to be killed). */
  async stop(timeoutMs = 20_000): Promise<ServerStats | undefined> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return undefined;
    try {
      const line = await this.request("stop", timeoutMs);
      await Promise.race([this.exited, new Promise((r) => setTimeout(r, timeoutMs))]);
      return line as unknown as ServerStats;
    } catch {
      this.child.kill("SIGKILL");
      await this.exited;
      return undefined;
    }
  }
}

/** The outcome of a command run to completion. */
export interface RunResult {
  readonly code: number | string;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

/** A command started by `launch`: the child and its eventual outcome. */
export interface Launched {
  readonly child: ChildProcess;
  readonly result: Promise<RunResult>;
}

/** Starts a command (pinned as `role`), bounded by `timeoutMs` (then SIGKILL). */
export function launch(
  role: "server" | "load",
  cmd: string,
  args: string[],
  timeoutMs: number,
  env: Record<string, string> = {},
): Launched {
  const [c, a] = pinned(role, cmd, args);
  const child = track(
    spawn(c, a, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] }),
  );
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-20_000);
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  const result = new Promise<RunResult>((resolve) => {
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? signal ?? "unknown", stdout, stderr, timedOut });
    });
  });
  return { child, result };
}

/** Runs a command (pinned as `role`) to completion, bounded by `timeoutMs`. */
export function run(
  role: "server" | "load",
  cmd: string,
  args: string[],
  timeoutMs: number,
  env: Record<string, string> = {},
): Promise<RunResult> {
  return launch(role, cmd, args, timeoutMs, env).result;
}

/** A Node client (bench/clients/*.ts) as a child process on the load core. */
export class ClientProc {
  readonly child: ChildProcess;
  readonly #lines: Array<Record<string, unknown>> = [];
  readonly #waiters: Array<() => void> = [];
  #stderr = "";
  readonly exited: Promise<number | string>;

  constructor(script: string, opts: unknown) {
    const [cmd, args] = pinned("load", process.execPath, [
      "--import",
      "tsx",
      script,
      JSON.stringify(opts),
    ]);
    this.child = track(spawn(cmd, args, { cwd: ROOT, stdio: ["pipe", "pipe", "pipe"] }));
    this.exited = new Promise((resolve) =>
      this.child.once("exit", (code, signal) => {
        resolve(code ?? signal ?? "unknown");
        for (const wake of this.#waiters.splice(0)) wake();
      }),
    );
    this.child.stderr?.on("data", (chunk: Buffer) => {
      this.#stderr = (this.#stderr + chunk.toString()).slice(-8000);
    });
    createInterface({ input: this.child.stdout! }).on("line", (text) => {
      try {
        this.#lines.push(JSON.parse(text) as Record<string, unknown>);
      } catch {
        return;
      }
      for (const wake of this.#waiters.splice(0)) wake();
    });
  }

  /** Waits for the first line with this `type` (bounded); throws if the client exits first. */
  async waitFor(type: string, timeoutMs: number): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#lines.findIndex((l) => l.type === type);
      if (i >= 0) return this.#lines.splice(i, 1)[0]!;
      const failed = this.#lines.find((l) => l.type === "result" && l.ok === false);
      if (failed) throw new Error(`client failed: ${String(failed.error)}`);
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`client exited before "${type}":\n${this.#stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) {
        this.child.kill("SIGKILL");
        throw new Error(`client: no "${type}" within ${timeoutMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 1000));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  send(command: string): void {
    this.child.stdin?.write(`${command}\n`);
  }

  /** Ends stdin and waits (bounded) for the process to exit. */
  async finish(timeoutMs = 10_000): Promise<void> {
    this.child.stdin?.end();
    const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}
