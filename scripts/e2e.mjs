#!/usr/bin/env node
// `npm run test:e2e [-- playwright args]`: the browser tests.
//   1. installs Debian's Chromium when /usr/bin/chromium is missing
//      (apt-get update once, then apt-get install -y chromium; needs root),
//   2. builds the web app (web/dist),
//   3. runs `playwright test` with the given arguments (e.g. --project=connect,
//      e2e/chat.spec.ts, --headed, --ui) and exits with its code.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const CHROMIUM = "/usr/bin/chromium";

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit", ...options });
  if (result.error) {
    process.stderr.write(`e2e: cannot run ${command}: ${result.error.message}\n`);
    process.exit(1);
  }
  return result.status ?? 1;
}

if (!existsSync(CHROMIUM)) {
  process.stdout.write("e2e: installing Chromium (apt-get)…\n");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  if (
    run("apt-get", ["update"], { env }) !== 0 ||
    run("apt-get", ["install", "-y", "chromium"], { env }) !== 0
  ) {
    process.stderr.write("e2e: could not install chromium (apt-get needs root)\n");
    process.exit(1);
  }
}

process.stdout.write("e2e: building the web app…\n");
const build = run(join(root, "node_modules", ".bin", "vite"), [
  "build",
  "--config",
  "web/vite.config.ts",
  "--logLevel",
  "warn",
]);
if (build !== 0) process.exit(build);
process.stdout.write("e2e: bundling the server (what npm start runs)…\n");
const bundle = run(process.execPath, [join(root, "scripts", "build.mjs")]);
if (bundle !== 0) process.exit(bundle);

const started = Date.now();
const status = run(
  join(root, "node_modules", ".bin", "playwright"),
  ["test", ...process.argv.slice(2)],
  {
    env: { ...process.env, E2E_SKIP_BUILD: "1" },
  },
);
process.stdout.write(
  `e2e: playwright exited ${status} after ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
);
process.exit(status);
