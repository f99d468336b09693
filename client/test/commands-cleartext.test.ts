import { describe, expect, it } from "vitest";
import { describeCommandsOver } from "./matrix.js";
import { runCli, tempConfigDir } from "./support.js";

describeCommandsOver("cleartext");

describe("switchboard usage", () => {
  it("exits 2 on usage errors, 0 for --help and --version; --help documents the exit codes", async () => {
    const configDir = await tempConfigDir();
    const run = (args: string[]) => runCli(args, { configDir });
    const [unknown, missing, noFile, noFormat, help, version, json] = await Promise.all([
      run(["get", "--frobnicate", "x"]),
      run(["register", "ada"]),
      run(["import", "/no/such/file.csv"]),
      run(["import", "-"]),
      run(["--help"]),
      run(["--version"]),
      run(["--json", "get"]),
    ]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("unknown option '--frobnicate'");
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("required option '-e, --email <email>' not specified");
    expect(noFile.code).toBe(2);
    expect(noFile.stderr).toContain("/no/such/file.csv: ENOENT");
    expect(noFormat.code).toBe(2);
    expect(noFormat.stderr).toContain("pass --format csv or --format jsonl");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/Exit codes:[\s\S]*2 {2}usage error[\s\S]*6 {2}unavailable/);
    expect(version.code).toBe(0);
    expect(version.stdout.trim()).toBe("0.1.0");
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr)).toEqual({
      error: expect.objectContaining({
        kind: "usage",
        exitCode: 2,
        message: "missing required argument 'ids'",
      }),
    });
  });
});
