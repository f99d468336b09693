#!/usr/bin/env node
// `npm run bench` — Switchboard's benchmark harness (issue 7).
//
//   npm run bench              full mode: warm-up, then 3 interleaved runs per row, medians
//   npm run bench -- --quick   CI smoke: about a second per scenario, checks everything works
//
// Starts every server and load generator itself, on 127.0.0.1 only, and
// writes bench/results/latest.json and latest.md (plus profile-unary.md).
// Needs h2load (nghttp2-client), wrk and taskset (util-linux); when one is
// missing and this runs as root (or with password-less sudo) on Debian or
// Ubuntu, it installs them with apt-get. Exit code 0 only when every scenario
// ran and every check passed.
import { spawnSync } from "node:child_process";
import { cpus } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    render: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (values.help) {
  process.stdout.write(
    "usage: npm run bench [-- --quick | --render]\n" +
      "  --quick   CI smoke run (about a minute); default: full run (6-10 minutes)\n" +
      "  --render  only rewrite latest.md (and the goals in latest.json) from latest.json\n",
  );
  process.exit(0);
}

const resultsDir = fileURLToPath(new URL("./results/", import.meta.url));

if (values.render) {
  const { register } = await import("tsx/esm/api");
  register();
  const { renderMarkdown } = await import("./harness/report.ts");
  const { goals } = await import("./harness/main.ts");
  const { readFileSync, writeFileSync } = await import("node:fs");
  const results = JSON.parse(readFileSync(`${resultsDir}latest.json`, "utf8"));
  results.goals = goals(results);
  writeFileSync(`${resultsDir}latest.json`, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(`${resultsDir}latest.md`, renderMarkdown(results));
  process.stdout.write(`[bench] rewrote ${resultsDir}latest.md\n`);
  process.exit(0);
}

const has = (tool) =>
  spawnSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" }).status === 0;

/** Installs Debian packages as root (or via password-less sudo); false if it cannot. */
function aptInstall(packages) {
  if (!has("apt-get")) return false;
  const asRoot = process.getuid?.() === 0;
  const sudo = !asRoot && has("sudo") && spawnSync("sudo", ["-n", "true"]).status === 0;
  if (!asRoot && !sudo) return false;
  const cmd = (args) => {
    const [c, a] = sudo ? ["sudo", ["-n", ...args]] : [args[0], args.slice(1)];
    process.stdout.write(`[bench] ${[c, ...a].join(" ")}\n`);
    return (
      spawnSync(c, a, {
        stdio: "inherit",
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
        timeout: 300_000,
      }).status === 0
    );
  };
  return (
    cmd(["apt-get", "update"]) &&
    cmd(["apt-get", "install", "-y", "--no-install-recommends", ...packages])
  );
}

const PACKAGES = { h2load: "nghttp2-client", wrk: "wrk", taskset: "util-linux" };
const missing = Object.keys(PACKAGES).filter((tool) => !has(tool));
if (missing.length > 0) {
  process.stdout.write(`[bench] missing: ${missing.join(", ")}; installing\n`);
  aptInstall(missing.map((tool) => PACKAGES[tool]));
}
for (const tool of ["h2load", "wrk"]) {
  if (!has(tool)) {
    process.stderr.write(
      `bench: ${tool} is required (Debian/Ubuntu: apt-get install ${PACKAGES[tool]}); could not install it\n`,
    );
    process.exit(2);
  }
}
const cores = cpus().length;
const pin = cores >= 2 && has("taskset");
if (!pin) {
  process.stdout.write(
    `[bench] not pinning: ${cores < 2 ? `${cores} core` : "taskset (util-linux) missing"}\n`,
  );
}

const versionOf = (cmd, args) => {
  const res = spawnSync(cmd, args, { encoding: "utf8" });
  return `${res.stdout ?? ""}${res.stderr ?? ""}`.split("\n")[0].trim();
};
const tools = {
  h2load: versionOf("h2load", ["--version"]).replace(/^h2load\s+/, ""),
  wrk: versionOf("wrk", ["-v"])
    .replace(/^wrk\s+/, "")
    .replace(/\s+Copyright.*$/, ""),
};

// The servers under test run the bundled server (dist/), as `npm start`
// does; build it now so the figures are of the current sources.
process.stdout.write("[bench] bundling the server (npm run build)\n");
const built = spawnSync(
  process.execPath,
  [fileURLToPath(new URL("../scripts/build.mjs", import.meta.url))],
  { stdio: "inherit" },
);
if (built.status !== 0) {
  process.stderr.write("bench: the server does not build (npm run build)\n");
  process.exit(2);
}

// The harness itself is TypeScript (it shares the server's generated code);
// tsx compiles it on the fly.
const { register } = await import("tsx/esm/api");
register();
const harness = await import("./harness/main.ts");
const proc = await import("./harness/proc.ts");

// Hard bound on the whole run, whatever happens.
const limitMs = (values.quick ? 5 : 20) * 60_000;
const limit = setTimeout(() => {
  process.stderr.write(`bench: still running after ${limitMs / 60_000} min; giving up\n`);
  proc.killAllChildren();
  process.exit(1);
}, limitMs);
limit.unref();
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    proc.killAllChildren();
    process.exit(130);
  });
}
process.on("exit", () => proc.killAllChildren());

const code = await harness.main({
  quick: values.quick,
  pin,
  tools,
  resultsDir,
});
process.exit(code);
