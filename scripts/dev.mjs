#!/usr/bin/env node
// `npm run dev`: the Switchboard server (restarting when its sources change)
// on PORT (8080) with a development data dir (./data/dev), plus the Vite
// dev server (hot reload) on WEB_PORT (5173) proxying the RPC paths to it.
// Open http://127.0.0.1:5173. Ctrl-C (or SIGTERM) stops both; if either
// exits, the other is stopped too.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const port = process.env.PORT ?? "8080";
const webPort = process.env.WEB_PORT ?? "5173";
const dataDir = process.env.DATA_DIR ?? join(root, "data", "dev");
mkdirSync(dataDir, { recursive: true });

const children = new Map();

function start(name, command, args, env) {
  const child = spawn(command, args, {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: "inherit",
  });
  children.set(name, child);
  child.on("exit", (code, signal) => {
    children.delete(name);
    if (!stopping) {
      process.stderr.write(`dev: ${name} exited (${signal ?? code}); stopping the rest\n`);
      stop(typeof code === "number" && code !== 0 ? code : 1);
    } else if (children.size === 0) {
      process.exit(exitCode);
    }
  });
  return child;
}

let stopping = false;
let exitCode = 0;
/**
 * Stops both children. `graceMs`: Ctrl-C already reached them (the terminal
 * signals the whole process group), so give them a moment to stop on their
 * own before they are told again.
 */
function stop(code = 0, graceMs = 0) {
  if (stopping) return;
  stopping = true;
  exitCode = code;
  if (children.size === 0) process.exit(code);
  setTimeout(() => {
    for (const child of children.values()) child.kill("SIGTERM");
  }, graceMs).unref();
  // Whatever is still running 5 s later is killed.
  setTimeout(() => {
    for (const child of children.values()) child.kill("SIGKILL");
    process.exit(code || 1);
  }, graceMs + 5000).unref();
}

process.on("SIGINT", () => stop(0, 1000));
for (const signal of ["SIGTERM", "SIGHUP"]) process.on(signal, () => stop(0));

start(
  "server",
  process.execPath,
  [
    "--watch-path=server/src",
    "--watch-path=shared",
    "--watch-path=gen",
    "--import",
    "tsx",
    "server/src/main.ts",
  ],
  { PORT: port, DATA_DIR: dataDir, NODE_ENV: process.env.NODE_ENV ?? "development" },
);
start(
  "vite",
  join(root, "node_modules", ".bin", "vite"),
  ["--config", "web/vite.config.ts", "--port", webPort, "--strictPort"],
  { SWITCHBOARD_API_URL: `http://127.0.0.1:${port}`, WEB_PORT: webPort },
);
process.stdout.write(
  `dev: API on http://127.0.0.1:${port}, web app with hot reload on http://127.0.0.1:${webPort}\n`,
);
