// `npm run generate`: regenerates gen/ from proto/ with buf (see buf.gen.yaml),
// then lints the protos. Exits non-zero, with buf's output, when either fails.
//
//   node scripts/generate.mjs           rewrite gen/, then `buf lint`
//   node scripts/generate.mjs --check   generate into a temp dir and compare it
//                                       with gen/; exit 1 listing stale, missing
//                                       and extra files (gen/ is not touched)
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

// Everything is resolved from this file's location, never from the cwd.
const root = fileURLToPath(new URL("..", import.meta.url));
const bin = join(root, "node_modules", ".bin");
// buf.gen.yaml names `local: protoc-gen-es`, which buf looks up on PATH.
const env = { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` };

/** Runs buf in the repo root; on failure prints its output and exits with its status. */
function buf(...args) {
  const r = spawnSync(join(bin, "buf"), args, { cwd: root, env, encoding: "utf8" });
  if (r.status !== 0) {
    process.stderr.write(`buf ${args.join(" ")} failed\n${r.error ?? ""}${r.stdout}${r.stderr}`);
    process.exit(r.status || 1);
  }
  process.stdout.write(r.stdout + r.stderr);
}

/** Relative paths of all files below dir (empty when dir does not exist). */
function files(dir) {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => relative(dir, join(e.parentPath, e.name)))
      .sort();
  } catch {
    return [];
  }
}

if (process.argv.includes("--check")) {
  const tmp = mkdtempSync(join(tmpdir(), "switchboard-gen-"));
  process.on("exit", () => rmSync(tmp, { recursive: true, force: true })); // also on process.exit
  buf("generate", "--output", tmp); // plugin `out: gen` lands in tmp/gen
  const want = join(tmp, "gen");
  const have = join(root, "gen");
  const current = new Set(files(have));
  const problems = [];
  for (const f of files(want)) {
    if (!current.has(f)) problems.push(`missing: gen/${f}`);
    else if (!readFileSync(join(want, f)).equals(readFileSync(join(have, f))))
      problems.push(`stale:   gen/${f}`);
    current.delete(f);
  }
  for (const f of current) problems.push(`extra:   gen/${f}`);
  if (problems.length > 0) {
    console.error(`gen/ is out of date; run \`npm run generate\`:\n  ${problems.join("\n  ")}`);
    process.exit(1);
  }
  console.log("gen/ is up to date");
} else {
  buf("generate");
  console.log("generated gen/");
}
buf("lint");
