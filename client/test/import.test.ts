import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CliTestServer,
  GNU_TIME,
  peakRssKiB,
  runCli,
  startCliTestServer,
  tempConfigDir,
} from "./support.js";

/**
 * `switchboard import`: exact line numbers for the failures of a 10,000-line
 * file, and flat memory whatever the file's length.
 */

const PASSWORD = "correct horse battery";

describe("switchboard import", () => {
  let server: CliTestServer;
  let adminDir: string;
  let work: string;
  const cli = (
    args: string[],
    options: { wrapper?: string[]; env?: Record<string, string> } = {},
  ) =>
    runCli(["--addr", server.url, ...args], {
      configDir: adminDir,
      timeoutMs: 120_000,
      ...options,
    });

  beforeAll(async () => {
    server = await startCliTestServer();
    adminDir = await tempConfigDir();
    work = await tempConfigDir();
    const r = await runCli(
      [
        "--addr",
        server.url,
        "register",
        "admin",
        "-e",
        "admin@example.com",
        "--password-stdin",
        "--login",
      ],
      { configDir: adminDir, input: `${PASSWORD}\n` },
    );
    expect(r.code, r.stderr).toBe(0);
  });
  afterAll(() => server?.close());

  it("reports exactly the bad lines of a 10,000-line CSV file (header, blank and multi-line records counted)", async () => {
    const lines: string[] = ["username,email,password,display_name"];
    const bad = new Map<number, RegExp>();
    let created = 0;
    const user = (i: number) => `imp${i}`;
    while (lines.length < 10_000) {
      const n = lines.length + 1; // the 1-based line about to be written
      if (n % 1000 === 0) {
        lines.push(""); // blank: skipped, not a failure
      } else if (n % 997 === 0) {
        lines.push(`${user(n)},not-an-email,${PASSWORD},Bad Email`);
        bad.set(n, /invalid_argument: email: must be a valid email address/);
      } else if (n % 1499 === 0) {
        lines.push(`${user(n)},${user(n)}@example.com,short,Short Password`);
        bad.set(n, /invalid_argument: password: must be at least 8 characters/);
      } else if (n === 4321) {
        lines.push(`${user(n)},${user(n)}@example.com`);
        bad.set(n, /expected 4 fields \(username,email,password,display_name\), found 2/);
      } else if (n === 5000 + 1) {
        lines.push("   "); // whitespace only: blank
      } else if (n === 6000 + 1) {
        // a quoted field spanning two lines: one record, reported at its first line
        lines.push(`${user(n)},${user(n)}@example.com,"multi`, `line password",Two Lines`);
        created++;
      } else if (n === 7777) {
        lines.push(`imp2,someone-else@example.com,${PASSWORD},Duplicate`);
        bad.set(n, /already_exists: username is already taken/);
      } else if (n === 9999) {
        lines.push(`x,${user(n)}@example.com,${PASSWORD},`);
        bad.set(n, /invalid_argument: username: must be at least 3 characters/);
      } else {
        lines.push(`${user(n)},${user(n)}@example.com,${PASSWORD},User ${n}`);
        created++;
      }
    }
    expect(lines).toHaveLength(10_000);
    const file = join(work, "ten-thousand.csv");
    await writeFile(file, `${lines.join("\n")}\n`);

    const r = await cli(["import", file]);
    expect(r.code, r.stderr).toBe(5);
    const out = r.stdout.trim().split("\n");
    expect(out[0]).toBe(
      `import ${file}: ${created} created, ${bad.size} failed (${created + bad.size - 1} users sent)`,
    );
    const reported = out.slice(1).map((l) => {
      const m = /^line (\d+): (.*)$/.exec(l);
      expect(m, l).not.toBeNull();
      return [Number(m?.[1]), m?.[2] ?? ""] as const;
    });
    expect(reported.map(([n]) => n)).toEqual([...bad.keys()].sort((a, b) => a - b));
    for (const [n, reason] of reported) expect(reason).toMatch(bad.get(n) as RegExp);
    expect(r.stderr).toContain(`${bad.size} of ${created + bad.size} lines failed`);
  }, 120_000);

  it("reports JSONL line numbers too, and reads stdin with --format", async () => {
    const input = [
      `{"username":"jl1","email":"jl1@example.com","password":"${PASSWORD}"}`,
      "",
      "not json",
      `{"username":"jl2","email":"jl2@example.com","password":"${PASSWORD}","display_name":"J2"}`,
      `{"username":"jl3","email":"nope","password":"${PASSWORD}"}`,
      `{"username":"jl4","unknown":true}`,
    ].join("\r\n");
    const r = await runCli(["--addr", server.url, "--json", "import", "-", "--format", "jsonl"], {
      configDir: adminDir,
      input,
    });
    expect(r.code, r.stderr).toBe(5);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ createdCount: 2, failedCount: 3, sent: 3 });
    expect(summary.failures.map((f: { line: number }) => f.line)).toEqual([3, 5, 6]);
    expect(JSON.parse(r.stderr.trim())).toMatchObject({ error: { exitCode: 5, kind: "invalid" } });
  });

  it("says when the server listed only the first 10,000 failures", async () => {
    const rows = ["username,email,password"];
    for (let i = 1; i <= 10_050; i++) rows.push(`many${i},bad-${i},${PASSWORD}`);
    const file = join(work, "many-failures.csv");
    await writeFile(file, rows.join("\n"));
    const r = await cli(["import", file]);
    expect(r.code).toBe(5);
    expect(r.stdout).toContain("0 created, 10050 failed");
    expect(r.stdout).toContain(
      "note: the server lists only its first 10000 failures: 50 more lines failed without details",
    );
    expect(r.stdout).toMatch(/^line 10001: many10000: /m);
    expect(r.stdout).not.toMatch(/^line 10002: /m);
  }, 60_000);

  it("keeps its memory flat: peak RSS for 200,000 lines ≈ for 20,000 lines", async () => {
    // Mostly invalid lines (bad email): the server rejects them without
    // hashing, so the test stays quick while every line still streams
    // through the CLI.
    const write = async (n: number) => {
      const file = join(work, `mem-${n}.csv`);
      const chunks: string[] = ["username,email,password,display_name\n"];
      for (let i = 1; i < n; i++) {
        chunks.push(
          i % 5000 === 0
            ? `mem${n}x${i},mem${n}x${i}@example.com,${PASSWORD},Valid ${i}\n`
            : `mem${n}x${i},bad-email-${i},${PASSWORD},Name ${i}\n`,
        );
      }
      await writeFile(file, chunks.join(""));
      return file;
    };
    const measure = async (n: number) => {
      const file = await write(n);
      const r = await cli(
        ["import", file],
        GNU_TIME ? { wrapper: [GNU_TIME, "-v"] } : { env: { SWITCHBOARD_DEBUG_MAXRSS: "1" } },
      );
      expect(r.code, r.stderr.slice(-2000)).toBe(5);
      const valid = Math.floor((n - 1) / 5000);
      expect(r.stdout).toContain(`import ${file}: ${valid} created, ${n - 1 - valid} failed`);
      const kib = peakRssKiB(r.stderr);
      expect(kib).toBeGreaterThan(0);
      return { kib: kib as number, ms: r.ms };
    };
    const small = await measure(20_000);
    const big = await measure(200_000);
    const mb = (kib: number) => (kib / 1024).toFixed(1);
    console.log(
      `import peak RSS: 20,000 lines ${mb(small.kib)} MB (${small.ms} ms), ` +
        `200,000 lines ${mb(big.kib)} MB (${big.ms} ms)`,
    );
    expect(big.kib).toBeLessThan(small.kib * 1.5);
    expect(big.kib - small.kib).toBeLessThan(60 * 1024);
  }, 150_000);
});
