#!/usr/bin/env node
// Playwright's webServer: builds the web app and bundles the server unless
// E2E_SKIP_BUILD=1 (set by scripts/e2e.mjs, which has just built both), then
// runs the real server as `npm start` does (`node dist/main.js`) with the
// environment Playwright passes (PORT, DATA_DIR, test settings), and removes
// DATA_DIR when the server has stopped.
import { spawn, spawnSync } from "node:child_process";
import { rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

if (process.env.E2E_SKIP_BUILD !== "1") {
  const build = spawnSync(
    join(root, "node_modules", ".bin", "vite"),
    ["build", "--config", "web/vite.config.ts", "--logLevel", "warn"],
    { cwd: root, stdio: "inherit" },
  );
  if (build.status !== 0) process.exit(build.status ?? 1);
  const bundle = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], {
    cwd: root,
    stdio: "inherit",
  });
  if (bundle.status !== 0) process.exit(bundle.status ?? 1);
}

const server = spawn(process.execPath, ["--enable-source-maps", join(root, "dist", "main.js")], {
  cwd: root,
  stdio: "inherit",
});
// Playwright (and Ctrl-C) signal the whole process group, the server included:
// it shuts down gracefully by itself; this wrapper just waits for it.
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => undefined);
server.on("exit", (code, signal) => {
  const dataDir = process.env.DATA_DIR;
  if (dataDir?.includes("switchboard-e2e-")) rmSync(dataDir, { recursive: true, force: true });
  process.exit(code ?? (signal ? 1 : 0));
});
