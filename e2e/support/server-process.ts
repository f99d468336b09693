import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { E2E_ENV } from "./env.js";

const ROOT = new URL("../../", import.meta.url).pathname;

/** A free TCP port on 127.0.0.1 (asked from the OS, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A real Switchboard server owned by a test: its own port and data dir, and
 * its own settings (a tight rate limit, a short token TTL). It can be
 * stopped (SIGTERM, graceful) and started again on the same port and data
 * dir, which is how a deploy looks to the browser.
 */
export class ServerProcess {
  #child: ChildProcess | undefined;
  #exited: Promise<void> | undefined;
  readonly logs: string[] = [];

  private constructor(
    readonly port: number,
    readonly dataDir: string,
    readonly env: Record<string, string>,
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  static async start(env: Record<string, string> = {}): Promise<ServerProcess> {
    const server = new ServerProcess(
      await freePort(),
      await mkdtemp(join(tmpdir(), "switchboard-e2e-")),
      env,
    );
    await server.start();
    return server;
  }

  /** Starts the process and resolves once it listens. */
  async start(): Promise<void> {
    if (this.#child) throw new Error("already running");
    // The bundle npm start runs (built by scripts/e2e.mjs or web-server.mjs).
    const child = spawn(process.execPath, ["--enable-source-maps", "dist/main.js"], {
      cwd: ROOT,
      env: {
        ...process.env,
        ...E2E_ENV,
        LOG_LEVEL: "info",
        ...this.env,
        PORT: String(this.port),
        DATA_DIR: this.dataDir,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once("exit", () => resolve()));
    let stderr = "";
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    await new Promise<void>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        this.logs.push(line);
        if (line.includes('"url"') && line.includes("listening")) resolve();
      });
      child.once("exit", (code) =>
        reject(new Error(`server exited (${code}) before listening:\n${stderr}`)),
      );
    });
  }

  /** SIGTERM, then waits for the graceful shutdown to finish. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    child.kill("SIGTERM");
    await this.#exited;
    this.#child = undefined;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stops the server and deletes its data. */
  async dispose(): Promise<void> {
    await this.stop();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}
