#!/usr/bin/env node
// `npm start`: builds the web app (web/dist) and bundles the server (dist/,
// scripts/build.mjs) when either is missing or older than its sources, then
// runs the bundle, which serves the app and the API on one port. The bundle
// starts in well under half the time of the TypeScript run through tsx, and
// runs without tsx's per-closure `__name` helpers on hot paths.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/** Newest modification time below `dir` (0 when it does not exist). */
function newest(dir) {
  if (!existsSync(dir)) return 0;
  let latest = statSync(dir).mtimeMs;
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile())
      latest = Math.max(latest, statSync(join(entry.parentPath, entry.name)).mtimeMs);
  }
  return latest;
}

const dist = join(root, "web", "dist", "index.html");
const sources = Math.max(
  newest(join(root, "web", "src")),
  newest(join(root, "gen")),
  newest(join(root, "shared")),
);
if (
  existsSync(join(root, "web", "index.html")) &&
  (!existsSync(dist) || statSync(dist).mtimeMs < sources)
) {
  process.stdout.write("switchboard: building the web app (web/dist)…\n");
  const build = spawnSync(
    join(root, "node_modules", ".bin", "vite"),
    ["build", "--config", "web/vite.config.ts"],
    {
      cwd: root,
      stdio: "inherit",
    },
  );
  if (build.status !== 0) process.exit(build.status ?? 1);
}
const serverMain = join(root, "dist", "main.js");
const serverSources = Math.max(
  newest(join(root, "server", "src")),
  newest(join(root, "gen")),
  newest(join(root, "shared")),
  statSync(join(root, "scripts", "build.mjs")).mtimeMs,
);
// scripts/build.mjs writes the stamp once a build succeeded.
const stamp = join(root, "dist", ".built");
if (!existsSync(serverMain) || !existsSync(stamp) || statSync(stamp).mtimeMs < serverSources) {
  process.stdout.write("switchboard: bundling the server (dist/)…\n");
  const build = spawnSync(process.execPath, [join(root, "scripts", "build.mjs")], {
    cwd: root,
    stdio: "inherit",
  });
  if (build.status !== 0) process.exit(build.status ?? 1);
}
// Node flags of the server process (shared with the bench's servers):
// source maps for stack traces, and a young generation of 2 × 32 MB instead
// of 16: a unary call's objects live across a few awaits, and with hundreds
// of calls in flight the default semi-space promotes most of them to the old
// generation. 32 MB measured 94–104 µs of CPU per full-chain GetUser against
// 118–120 µs at the default (64 and 128 MB were no better).
const nodeFlags = JSON.parse(readFileSync(join(root, "scripts", "server-node-flags.json"), "utf8"));
const server = spawn(process.execPath, [...nodeFlags, serverMain], {
  cwd: root,
  stdio: "inherit",
});
// The server shuts down gracefully on these; pass them on and wait for it.
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => server.kill(signal));
}
server.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
