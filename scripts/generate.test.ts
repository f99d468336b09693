import { spawnSync } from "node:child_process";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("..", import.meta.url));
const bin = join(root, "node_modules", ".bin");
const tmpDirs: string[] = [];

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "switchboard-gen-test-"));
  tmpDirs.push(dir);
  return dir;
}

/** Relative paths of every file below dir, sorted. */
function listFiles(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile())
    .map((e) => relative(dir, join(e.parentPath, e.name)))
    .sort();
}

/** Runs buf from the repo's node_modules, in the repo root, with protoc-gen-es on PATH. */
function buf(args: string[]): void {
  const r = spawnSync(join(bin, "buf"), args, {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ""}` },
  });
  if (r.status !== 0) throw new Error(`buf ${args.join(" ")} failed:\n${r.stdout}${r.stderr}`);
}

afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

describe("generated code", () => {
  it("gen/ matches what buf generates from proto/", () => {
    const out = tempDir();
    buf(["generate", "--output", out]); // buf.gen.yaml's `out: gen` lands in out/gen
    const fresh = join(out, "gen");
    const committed = join(root, "gen");
    const freshFiles = listFiles(fresh);
    expect(freshFiles.length).toBeGreaterThan(0);
    // Extra or missing files show up as a diff of the two lists.
    expect(listFiles(committed), "files in gen/ vs. files buf generates").toEqual(freshFiles);
    const stale = freshFiles.filter(
      (f) => !readFileSync(join(fresh, f)).equals(readFileSync(join(committed, f))),
    );
    expect(stale, "gen/ files that differ from buf's output; run `npm run generate`").toEqual([]);
  });

  it("`generate.mjs --check` passes on the committed gen/, from any working directory", () => {
    const r = spawnSync(process.execPath, [join(root, "scripts", "generate.mjs"), "--check"], {
      cwd: tmpdir(),
      encoding: "utf8",
    });
    expect(r.stderr).toBe("");
    expect(r.status).toBe(0);
    expect(r.stdout).toContain("gen/ is up to date");
  });

  it("`generate.mjs --check` names stale, missing and extra files when proto/ was edited without regenerating", () => {
    // A copy of the workspace, so the real proto/ and gen/ are never touched.
    const copy = tempDir();
    for (const entry of ["proto", "gen", "buf.yaml", "buf.gen.yaml", "scripts/generate.mjs"]) {
      cpSync(join(root, entry), join(copy, entry), { recursive: true });
    }
    symlinkSync(join(root, "node_modules"), join(copy, "node_modules"), "dir");
    const protoPath = join(copy, "proto/switchboard/user/v1/user.proto");
    const proto = readFileSync(protoPath, "utf8");
    const edited = proto.replace("// UserService registers", "// UserService (edited) registers");
    expect(edited).not.toBe(proto);
    writeFileSync(protoPath, edited);
    rmSync(join(copy, "gen/google/rpc/code_pb.ts"));
    mkdirSync(join(copy, "gen/old"));
    writeFileSync(join(copy, "gen/old/removed_pb.ts"), "// no longer generated\n");

    const r = spawnSync(process.execPath, [join(copy, "scripts", "generate.mjs"), "--check"], {
      cwd: copy,
      encoding: "utf8",
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("stale:   gen/switchboard/user/v1/user_pb.ts");
    expect(r.stderr).toContain("missing: gen/google/rpc/code_pb.ts");
    expect(r.stderr).toContain("extra:   gen/old/removed_pb.ts");
    expect(r.stderr).not.toContain("health_pb.ts");
    // --check leaves gen/ alone.
    expect(readFileSync(join(copy, "gen/old/removed_pb.ts"), "utf8")).toBe(
      "// no longer generated\n",
    );
  });
});
