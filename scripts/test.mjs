#!/usr/bin/env node
// `npm test`: every check CI runs, in order, failing fast:
//   1. buf lint and the gen/ drift check (generate.mjs --check),
//   2. Biome (format + lint, warnings are errors),
//   3. TypeScript (strict, no emit),
//   4. Vitest: unit, contract and wire tests against real peers (buf curl,
//      grpc-js, the CLI as a subprocess, PostgreSQL and Redis on 127.0.0.1
//      when reachable; required under CI=true),
//   5. Playwright: the web app in Debian's Chromium (installed when missing),
//      every spec once over Connect and once over gRPC-Web.
// It ends with one line "tests: N passed, N failed, N skipped" over both runners.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = (name) => join(root, "node_modules", ".bin", name);

function step(title, command, args) {
  process.stdout.write(`\n== ${title}\n`);
  const started = Date.now();
  const result = spawnSync(command, args, { cwd: root, stdio: "inherit" });
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  if (result.status !== 0) {
    process.stdout.write(`\n${title} failed (${seconds}s)\n`);
    process.stdout.write("tests: 0 passed, 1 failed\n");
    process.exit(result.status ?? 1);
  }
  process.stdout.write(`== ${title}: ok (${seconds}s)\n`);
}

step("buf lint + gen/ drift", process.execPath, [join(root, "scripts/generate.mjs"), "--check"]);
step("biome", bin("biome"), ["check", "--error-on-warnings", "."]);
step("typecheck", bin("tsc"), ["-p", "tsconfig.json"]);
step("typecheck web", bin("tsc"), ["-p", "web/tsconfig.json"]);
step("typecheck e2e", bin("tsc"), ["-p", "e2e/tsconfig.json"]);
step("typecheck bench", bin("tsc"), ["-p", "bench/tsconfig.json"]);
step("bundle the server (dist/, what npm start runs)", process.execPath, [
  join(root, "scripts/build.mjs"),
]);

const report = join(mkdtempSync(join(tmpdir(), "switchboard-vitest-")), "report.json");
process.stdout.write("\n== vitest\n");
const vitest = spawnSync(
  bin("vitest"),
  ["run", "--reporter=default", "--reporter=json", `--outputFile.json=${report}`],
  { cwd: root, stdio: "inherit" },
);
let counts = { passed: 0, failed: 0, skipped: 0 };
try {
  const json = JSON.parse(readFileSync(report, "utf8"));
  counts = {
    passed: json.numPassedTests,
    failed: json.numFailedTests,
    skipped: json.numPendingTests + json.numTodoTests,
  };
} catch {
  // No report: vitest itself failed before running tests.
}
// A file that fails to load, or an unhandled error, fails the run without
// failing a test; count it so the closing line never says "0 failed" then.
if (vitest.status !== 0 && counts.failed === 0) counts.failed = 1;

const e2eReport = join(dirname(report), "e2e.json");
process.stdout.write("\n== playwright (e2e)\n");
const e2e = spawnSync(process.execPath, [join(root, "scripts/e2e.mjs"), "--reporter=list,json"], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, PLAYWRIGHT_JSON_OUTPUT_NAME: e2eReport },
});
let e2eFailed = 0;
try {
  const stats = JSON.parse(readFileSync(e2eReport, "utf8")).stats;
  counts.passed += stats.expected + stats.flaky;
  e2eFailed = stats.unexpected;
  counts.skipped += stats.skipped;
} catch {
  // No report: Playwright (or the Chromium install, or the build) failed first.
}
if (e2e.status !== 0 && e2eFailed === 0) e2eFailed = 1;
counts.failed += e2eFailed;

const ok = vitest.status === 0 && e2e.status === 0 && counts.passed > 0;
process.stdout.write(
  `tests: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped\n`,
);
process.exit(ok ? 0 : 1);
