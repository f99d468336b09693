import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { cpus, release, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import {
  checkGetUser,
  getUserRequestBody,
  healthy,
  type Protocol,
  registerAndLogin,
} from "./calls.js";
import { h2load, type LoadResult, type WrkSpec, writeWrkScript, wrk } from "./loadgen.js";
import {
  ClientProc,
  coreBusy,
  cpuSeconds,
  freePort,
  killAllChildren,
  launch,
  ROOT,
  run,
  SERVER_NODE_FLAGS,
  ServerProc,
  type ServerStats,
  setPinning,
} from "./proc.js";
import { renderMarkdown } from "./report.js";
import { max, median, min, ratio } from "./stats.js";
import type {
  FanoutResult,
  Goal,
  Machine,
  MemoryResult,
  MemorySnapshot,
  ProfileResult,
  Results,
  Settings,
  StartupResult,
  StreamRow,
  StreamRun,
  UnaryRow,
  UnaryRun,
} from "./types.js";

/** What bench/run.mjs found out before handing over. */
export interface RunnerOptions {
  readonly quick: boolean;
  /** Pin servers to core 0 and load generators to core 1. */
  readonly pin: boolean;
  readonly tools: Record<string, string>;
  /** Where latest.json / latest.md / profile-unary.md go. */
  readonly resultsDir: string;
}

const GET_USER_PATH = "/switchboard.user.v1.UserService/GetUser";

function settingsFor(quick: boolean): Settings {
  return quick
    ? {
        mode: "quick",
        warmupSeconds: 1,
        runSeconds: 1,
        reps: 1,
        h2Clients: 4,
        h2Streams: 64,
        wrkConnections: 64,
        streamIds: 1000,
        streamConcurrency: 4,
        streamSeconds: 1,
        streamClientWarmupSeconds: 0.3,
        memoryStreams: 1000,
        memoryConnections: 4,
        fanoutSubscribers: [100],
        fanoutMessages: 5,
        fanoutWarmupMessages: 2,
        startupRuns: 1,
        extraRounds: 0,
        unaryBudgetSeconds: 60,
        streamBudgetSeconds: 30,
        profileWarmupCalls: 2000,
        profileCalls: 5000,
      }
    : {
        mode: "full",
        warmupSeconds: 2,
        runSeconds: 4,
        reps: 3,
        h2Clients: 4,
        h2Streams: 64,
        wrkConnections: 64,
        streamIds: 1000,
        streamConcurrency: 4,
        streamSeconds: 4,
        streamClientWarmupSeconds: 1,
        memoryStreams: 10_000,
        memoryConnections: 8,
        fanoutSubscribers: [100, 1000],
        fanoutMessages: 30,
        fanoutWarmupMessages: 5,
        startupRuns: 5,
        extraRounds: 3,
        unaryBudgetSeconds: 300,
        streamBudgetSeconds: 130,
        profileWarmupCalls: 10_000,
        profileCalls: 50_000,
      };
}

function machineInfo(options: RunnerOptions): Machine {
  const list = cpus();
  let os = `Linux ${release()}`;
  try {
    const pretty = /PRETTY_NAME="([^"]+)"/.exec(readFileSync("/etc/os-release", "utf8"))?.[1];
    if (pretty) os = `${pretty} (kernel ${release()})`;
  } catch {
    // not Linux, or no os-release
  }
  return {
    cpuModel: list[0]?.model.trim() ?? "unknown",
    cores: list.length,
    node: process.version,
    os,
    memoryGb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    date: new Date().toISOString(),
    pinning: options.pin
      ? "servers on core 0, load generators and Node clients on core 1 (taskset)"
      : "none (fewer than 2 cores or no taskset)",
    tools: options.tools,
    source: gitDescription(),
  };
}

/** The commit measured, and whether the work tree had uncommitted changes. */
function gitDescription(): string {
  const git = (...args: string[]) =>
    spawnSync("git", args, { cwd: ROOT, encoding: "utf8" }).stdout?.trim() ?? "";
  const commit = git("rev-parse", "--short", "HEAD");
  if (!commit) return "unknown (not a git checkout)";
  const dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results");
  return `${commit}${dirty ? " + uncommitted changes" : ""}`;
}

/** Environment shared by every Switchboard process of the run. */
function switchboardEnv(dataDir: string, signingKey: string, extra: Record<string, string> = {}) {
  const unlimited = "1000000000/1";
  return {
    NODE_ENV: "production",
    HOST: "127.0.0.1",
    PORT: "0",
    DATA_DIR: dataDir,
    DATABASE_URL: "",
    REDIS_URL: "",
    TLS_CERT: "",
    TLS_KEY: "",
    LOG_LEVEL: "silent",
    LOG_FORMAT: "json",
    AUTH_SIGNING_KEY: signingKey,
    ACCESS_TOKEN_TTL_SECONDS: "86400",
    ADMIN_USERNAMES: "",
    SHUTDOWN_GRACE_MS: "2000",
    // The limiter still runs on every call (its cost is measured); it just never trips.
    RATE_LIMIT_USER: unlimited,
    RATE_LIMIT_PUBLIC: unlimited,
    RATE_LIMIT_LOGIN: unlimited,
    RATE_LIMIT_REGISTER: unlimited,
    RATE_LIMIT_CHAT: unlimited,
    // The memory and fan-out scenarios open thousands of streams as one user.
    MAX_STREAMS_PER_USER: "1000000",
    MAX_STREAMS_PER_ANONYMOUS_IP: "1000000",
    ...extra,
  };
}

const snapshot = (s: ServerStats | undefined): MemorySnapshot | undefined =>
  s && {
    rss: s.memory.rss,
    heapUsed: s.memory.heapUsed,
    external: s.memory.external,
  };

/** counters[group][key] after − before (0 when absent). */
function delta(before: ServerStats, after: ServerStats, group: string): Record<string, number> {
  const a = (after.counters[group] ?? {}) as Record<string, number>;
  const b = (before.counters[group] ?? {}) as Record<string, number>;
  const out: Record<string, number> = {};
  for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) {
    const d = (a[key] ?? 0) - (b[key] ?? 0);
    if (d !== 0) out[key] = d;
  }
  return out;
}

const sum = (counts: Record<string, number>, except: string[] = []) =>
  Object.entries(counts)
    .filter(([k]) => !except.includes(k))
    .reduce((acc, [, v]) => acc + v, 0);

/**
 * Starts measuring; the returned function tells how much CPU other
 * processes used on the server's core (core 0) since, per wall second.
 */
function otherCpuMeter(serverPid: number | undefined): () => number {
  const core0 = coreBusy()[0] ?? Number.NaN;
  const server0 = cpuSeconds(serverPid);
  const wall0 = performance.now();
  return () => {
    const wall = (performance.now() - wall0) / 1000;
    const other = (coreBusy()[0] ?? Number.NaN) - core0 - (cpuSeconds(serverPid) - server0);
    return Math.max(0, other / wall);
  };
}

/** A run is "noisy" when other processes used more than this much of the server's core. */
const NOISY = 0.1;

/**
 * Measured rounds, interleaved: every row once per round for `reps`
 * rounds; then, while the phase is within `budgetSeconds`, up to
 * `extraRounds` more rounds for the rows that still have fewer than `reps`
 * quiet runs (other processes take ≤ NOISY of the server's core).
 */
async function rounds(
  results: Results,
  rows: ReadonlyArray<{ readonly runs: ReadonlyArray<{ otherCpu: number }> }>,
  budgetSeconds: number,
  runRow: (index: number, round: number) => Promise<void>,
): Promise<void> {
  const s = results.settings;
  const start = performance.now();
  for (let round = 1; round <= s.reps + s.extraRounds; round++) {
    const extra = round > s.reps;
    if (extra && (performance.now() - start) / 1000 > budgetSeconds) break;
    let ran = false;
    for (let i = 0; i < rows.length; i++) {
      if (extra && rows[i]!.runs.filter((r) => r.otherCpu <= NOISY).length >= s.reps) continue;
      ran = true;
      await runRow(i, round);
    }
    if (!ran) break;
  }
  for (const row of rows) {
    results.noise.runs += row.runs.length;
    results.noise.quietRuns += row.runs.filter((r) => r.otherCpu <= NOISY).length;
  }
}

/** The runs figures are taken from: the quiet ones when there are any, else all. */
function usable<T extends { otherCpu: number }>(runs: readonly T[]): { runs: T[]; noisy: boolean } {
  const quiet = runs.filter((r) => r.otherCpu <= NOISY);
  return quiet.length > 0 ? { runs: quiet, noisy: false } : { runs: [...runs], noisy: true };
}

function log(message: string): void {
  process.stdout.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

export async function main(options: RunnerOptions): Promise<number> {
  const started = performance.now();
  const settings = settingsFor(options.quick);
  setPinning(options.pin ? { server: "0", load: "1" } : undefined);
  // The runner itself (pre-checks, stats, timing) stays off the server's core.
  if (options.pin)
    spawnSync("taskset", ["-a", "-p", "-c", "1", String(process.pid)], { stdio: "ignore" });
  const results: Results = {
    machine: machineInfo(options),
    noise: {
      loadAverageAtStart: readFileSync("/proc/loadavg", "utf8").trim(),
      runs: 0,
      quietRuns: 0,
    },
    settings,
    unary: [],
    streaming: [],
    memory: [],
    fanout: [],
    goals: [],
    errors: [],
    serverWarnings: [],
  };
  mkdirSync(options.resultsDir, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), "switchboard-bench-"));
  const dataDir = join(scratch, "data");
  mkdirSync(dataDir);
  const signingKey = randomBytes(32).toString("base64url");
  const servers: ServerProc[] = [];
  const cleanup = async () => {
    await Promise.allSettled(servers.map((s) => s.stop(5000)));
    // What the servers printed on stderr (Node warnings, …) is worth a look.
    for (const server of servers) {
      for (const line of server.stderr.split("\n")) {
        const text = line.replace(/\(node:\d+\) /, "").trim();
        if (/Warning|Error/.test(text) && !results.serverWarnings.some((w) => w.text === text)) {
          results.serverWarnings.push({ server: server.name, text });
        }
      }
    }
    killAllChildren();
    rmSync(scratch, { recursive: true, force: true });
  };

  try {
    log(
      `mode ${settings.mode}; ${results.machine.cpuModel}, ${results.machine.cores} cores, Node ${process.version}`,
    );
    log(`pinning: ${results.machine.pinning}`);

    // ---- servers for the throughput phases --------------------------------
    const sbFull = await ServerProc.start(
      "switchboard (full chain)",
      "bench/servers/switchboard.ts",
      switchboardEnv(dataDir, signingKey, { BENCH_INTERCEPTORS: "full" }),
      {},
    );
    servers.push(sbFull);
    if (!(await healthy(sbFull.url, 5000))) throw new Error("switchboard (full) is not healthy");
    const seeded = await registerAndLogin(sbFull.url, "benchuser");
    log(`seeded user ${seeded.userId} (Register + Login over Connect)`);
    const [sbNone, grpcJs, bare] = await Promise.all([
      ServerProc.start(
        "switchboard (no chain)",
        "bench/servers/switchboard.ts",
        switchboardEnv(dataDir, signingKey, { BENCH_INTERCEPTORS: "none" }),
        {},
      ),
      ServerProc.start("grpc-js", "bench/servers/grpc-js.ts", { PORT: "0", DATA_DIR: dataDir }, {}),
      ServerProc.start(
        "bare http2",
        "bench/servers/bare.ts",
        { PORT: "0", H1_PORT: "0", DATA_DIR: dataDir, BENCH_USER_ID: seeded.userId },
        { nodeFlags: ["--expose-gc"] },
      ),
    ]);
    servers.push(sbNone, grpcJs, bare);
    const bareIdle = snapshot(await bare.stats(true));
    results.memory.push({ server: "bare", idle: bareIdle, verified: true, problems: [] });
    log("servers up: switchboard full + none, grpc-js, bare");

    // ---- unary ------------------------------------------------------------
    await unaryPhase(results, settings, scratch, seeded, { sbFull, sbNone, grpcJs, bare });

    // ---- server streaming -------------------------------------------------
    await streamingPhase(results, settings, seeded, { sbFull, sbNone, grpcJs });

    await Promise.all([sbFull, sbNone, grpcJs, bare].map((s) => s.stop()));

    // ---- memory + fan-out (fresh servers) ---------------------------------
    await memoryPhase(results, settings, dataDir, signingKey, seeded, servers);

    // ---- start-up ---------------------------------------------------------
    results.startup = await startupPhase(settings, dataDir, signingKey);

    // ---- CPU profile ------------------------------------------------------
    results.profile = await profilePhase(
      options.resultsDir,
      settings,
      scratch,
      dataDir,
      signingKey,
      seeded,
      servers,
    );
  } catch (err) {
    results.errors.push(err instanceof Error ? (err.stack ?? err.message) : String(err));
    log(`FAILED: ${String(err)}`);
  } finally {
    await cleanup();
  }

  results.goals = goals(results);
  results.elapsedSeconds = Math.round((performance.now() - started) / 100) / 10;
  writeFileSync(join(options.resultsDir, "latest.json"), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(options.resultsDir, "latest.md"), renderMarkdown(results));
  log(
    `wrote ${join(options.resultsDir, "latest.md")} and latest.json in ${results.elapsedSeconds} s`,
  );

  const unverified = [
    ...results.unary.filter((r) => !r.verified).map((r) => `unary ${r.id}`),
    ...results.streaming.filter((r) => !r.verified).map((r) => `streaming ${r.id}`),
    ...results.memory.filter((r) => !r.verified).map((r) => `memory ${r.server}`),
    ...results.fanout.filter((r) => !r.verified).map((r) => `fan-out ${r.subscribers}`),
    ...(results.profile && !results.profile.verified ? ["profile"] : []),
    ...(results.startup && results.startup.problems.length > 0 ? ["start-up"] : []),
  ];
  if (results.errors.length > 0 || unverified.length > 0) {
    log(`NOT OK: ${[...results.errors.map((e) => e.split("\n")[0]), ...unverified].join("; ")}`);
    return 1;
  }
  log("all scenarios ran and every check passed");
  return 0;
}

// ==== unary =================================================================

interface Targets {
  readonly sbFull: ServerProc;
  readonly sbNone: ServerProc;
  readonly grpcJs: ServerProc;
  readonly bare: ServerProc;
}

interface Seeded {
  readonly userId: string;
  readonly token: string;
}

interface UnaryPlan {
  readonly row: UnaryRow;
  readonly server: ServerProc;
  readonly url: string;
  readonly protocol: Protocol;
  readonly token: string | undefined;
  readonly measure: (load: "warmup" | "run", n?: number) => Promise<LoadResult>;
  readonly verify: (before: ServerStats, after: ServerStats, res: LoadResult) => string[];
}

async function unaryPhase(
  results: Results,
  s: Settings,
  scratch: string,
  seeded: Seeded,
  t: Targets,
): Promise<void> {
  const grpcBody = join(scratch, "get-user.grpc.bin");
  const plainBody = join(scratch, "get-user.proto.bin");
  writeFileSync(grpcBody, getUserRequestBody(seeded.userId, true));
  writeFileSync(plainBody, getUserRequestBody(seeded.userId, false));
  const wrkScript = writeWrkScript(scratch);
  const bearer = `Bearer ${seeded.token}`;

  const plans: UnaryPlan[] = [];
  const targets = [
    { key: "sb-full", server: t.sbFull, token: seeded.token },
    { key: "sb-none", server: t.sbNone, token: undefined },
    { key: "bare", server: t.bare, token: undefined },
    { key: "grpc-js", server: t.grpcJs, token: undefined },
  ] as const;
  const scenarios = [
    { scenario: "grpc", protocol: "grpc", tool: "h2load" },
    { scenario: "connect-h2", protocol: "connect-h2", tool: "h2load" },
    { scenario: "connect-h1", protocol: "connect-h1", tool: "wrk" },
    { scenario: "grpc-web-h1", protocol: "grpc-web-h1", tool: "wrk" },
  ] as const;

  for (const sc of scenarios) {
    for (const target of targets) {
      // grpc-js speaks only gRPC.
      if (target.key === "grpc-js" && sc.scenario !== "grpc") continue;
      const url = `${sc.tool === "wrk" ? target.server.h1Url : target.server.url}${GET_USER_PATH}`;
      const row: UnaryRow = {
        id: `${sc.scenario}/${target.key}`,
        scenario: sc.scenario,
        target: target.key,
        tool: sc.tool,
        loadShape:
          sc.tool === "h2load"
            ? `h2load -c ${s.h2Clients} -m ${s.h2Streams} (${s.h2Clients * s.h2Streams} streams in flight)`
            : `wrk -t 1 -c ${s.wrkConnections} (${s.wrkConnections} HTTP/1.1 connections)`,
        runs: [],
        problems: [],
      };
      const auth: Record<string, string> = target.token ? { authorization: bearer } : {};
      let measure: UnaryPlan["measure"];
      if (sc.tool === "h2load") {
        const spec = {
          url,
          bodyFile: sc.scenario === "grpc" ? grpcBody : plainBody,
          headers:
            sc.scenario === "grpc"
              ? { "content-type": "application/grpc", te: "trailers", ...auth }
              : { "content-type": "application/proto", "connect-protocol-version": "1", ...auth },
          clients: s.h2Clients,
          streams: s.h2Streams,
        };
        measure = (load, n) =>
          h2load(spec, load === "warmup" ? { seconds: s.warmupSeconds } : { n: n ?? 1000 });
      } else {
        const spec: WrkSpec = {
          url,
          script: wrkScript,
          bodyFile: sc.scenario === "connect-h1" ? plainBody : grpcBody,
          check: sc.scenario === "connect-h1" ? "http200" : "grpcweb",
          headers:
            sc.scenario === "connect-h1"
              ? { "Content-Type": "application/proto", "Connect-Protocol-Version": "1", ...auth }
              : { "Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1", ...auth },
          connections: s.wrkConnections,
        };
        measure = (load) => wrk(spec, load === "warmup" ? s.warmupSeconds : s.runSeconds);
      }
      plans.push({
        row,
        server: target.server,
        url: sc.tool === "wrk" ? target.server.h1Url : target.server.url,
        protocol: sc.protocol,
        token: target.token,
        measure,
        verify: verifier(row, s),
      });
      results.unary.push(row);
    }
  }

  // Warm-up, which also calibrates h2load's -n to about runSeconds per run.
  for (const plan of plans) {
    const problem = await checkGetUser(plan.url, plan.protocol, seeded.userId, plan.token);
    if (problem) {
      plan.row.problems.push(`pre-check: ${problem}`);
      continue;
    }
    const res = await plan.measure("warmup");
    if (res.tool === "h2load") {
      const rate = Number.isFinite(res.rps) && res.rps > 0 ? res.rps : 1000;
      plan.row.n = Math.min(3_000_000, Math.max(1000, Math.round(rate * s.runSeconds)));
    }
    log(`warm-up ${plan.row.id}: ${Math.round(res.rps)} req/s`);
  }

  // Measured runs, interleaved: every row once per repetition.
  const measureOnce = async (plan: UnaryPlan): Promise<UnaryRun & { res: LoadResult }> => {
    const problems: string[] = [];
    const pre = await checkGetUser(plan.url, plan.protocol, seeded.userId, plan.token);
    if (pre) problems.push(`pre-check: ${pre}`);
    const before = await plan.server.stats();
    const otherCpu = otherCpuMeter(plan.server.pid);
    const cpu0 = cpuSeconds(plan.server.pid);
    const wall0 = performance.now();
    const res = await plan.measure("run", plan.row.n);
    const wall = (performance.now() - wall0) / 1000;
    const cpuUsed = cpuSeconds(plan.server.pid) - cpu0;
    const other = otherCpu();
    const after = await plan.server.stats();
    if (!res.ok) problems.push(`load generator: ${describeLoadProblem(res)}`);
    problems.push(...plan.verify(before, after, res));
    return {
      res,
      rps: res.rps,
      requests: res.requests,
      seconds: res.seconds,
      latencyMs: res.tool === "h2load" ? res.meanMs : res.p50Ms,
      ...(res.tool === "wrk" ? { p99Ms: res.p99Ms } : {}),
      serverCpu: cpuUsed / wall,
      otherCpu: other,
      cpuPerCallUs: res.requests > 0 ? (cpuUsed * 1e6) / res.requests : Number.NaN,
      verified: problems.length === 0,
      problems,
    };
  };

  await rounds(
    results,
    plans.map((p) => p.row),
    s.unaryBudgetSeconds,
    async (i, round) => {
      const plan = plans[i]!;
      if (plan.row.problems.some((p) => p.startsWith("pre-check"))) return;
      const { res, ...run } = await measureOnce(plan);
      // Failed checks stay in the row's problems whatever the run's figures.
      plan.row.problems.push(...run.problems);
      plan.row.runs.push(run);
      // The first warm-ups run on a cold JIT: aim the next run's -n at
      // runSeconds from what this (warm) run achieved.
      if (res.tool === "h2load" && Number.isFinite(res.rps) && res.rps > 0) {
        plan.row.n = Math.min(3_000_000, Math.max(1000, Math.round(res.rps * s.runSeconds)));
      }
      log(
        `round ${round} ${plan.row.id}: ${Math.round(res.rps)} req/s, server CPU ${run.serverCpu.toFixed(2)}, other processes ${run.otherCpu.toFixed(2)}${run.otherCpu > NOISY ? " (noisy)" : ""}${run.problems.length ? ` — ${run.problems.join("; ")}` : ""}`,
      );
    },
  );

  // Medians and ratios.
  for (const row of results.unary) {
    const { runs, noisy } = usable(row.runs);
    const rps = runs.map((r) => r.rps);
    row.usedRuns = runs.length;
    row.quietRuns = noisy ? 0 : runs.length;
    row.noisy = noisy;
    row.medianRps = median(rps);
    row.minRps = min(rps);
    row.maxRps = max(rps);
    row.medianLatencyMs = median(runs.map((r) => r.latencyMs));
    row.medianServerCpu = median(runs.map((r) => r.serverCpu));
    row.maxOtherCpu = max(runs.map((r) => r.otherCpu));
    row.medianCpuPerCallUs = median(runs.map((r) => r.cpuPerCallUs));
    row.verified =
      row.runs.length >= s.reps && row.problems.length === 0 && row.runs.every((r) => r.verified);
  }
  const find = (scenario: string, target: string) =>
    results.unary.find((r) => r.scenario === scenario && r.target === target);
  const grpcJsRps = find("grpc", "grpc-js")?.medianRps;
  const grpcJsCpu = find("grpc", "grpc-js")?.medianCpuPerCallUs;
  for (const row of results.unary) {
    row.vsGrpcJs = ratio(row.medianRps, grpcJsRps);
    row.cpuVsGrpcJs = ratio(grpcJsCpu, row.medianCpuPerCallUs);
    row.vsBare = ratio(row.medianRps, find(row.scenario, "bare")?.medianRps);
    if (row.target === "sb-full") {
      row.chainCost = 1 - ratio(row.medianRps, find(row.scenario, "sb-none")?.medianRps);
    }
  }
}

function describeLoadProblem(res: LoadResult): string {
  if (res.tool === "h2load") {
    return `${res.succeeded}/${res.requests} succeeded, ${res.status2xx} 2xx, ${res.failed} failed, ${res.errored} errored`;
  }
  return `${res.bad} bad responses (first: ${res.firstBad}), ${res.socketErrors} socket errors`;
}

/**
 * The server-side check of a load run: the server's own counts must match
 * what the load generator says it got.
 */
function verifier(row: UnaryRow, s: Settings): UnaryPlan["verify"] {
  return (before, after, res) => {
    const problems: string[] = [];
    const completed = res.requests;
    // wrk stops at its deadline with requests in flight: the server may have
    // answered up to one more per connection than wrk counted.
    const slack = res.tool === "wrk" ? s.wrkConnections : 0;
    const within = (n: number) => n >= completed && n <= completed + slack;
    if (row.target === "sb-full" || row.target === "sb-none") {
      const users = delta(before, after, "getUser");
      const found = users.found ?? 0;
      if (!within(found)) {
        problems.push(`server: store.getUser found the user ${found}× for ${completed} calls`);
      }
      if (users.missing) problems.push(`server: user missing ${users.missing}×`);
      const http = delta(before, after, "httpStatus");
      // 499 (client closed) is what the server logs for the requests wrk
      // still had in flight when it stopped and closed its connections.
      const closedByClient = res.tool === "wrk" ? (http["499"] ?? 0) : 0;
      const non200 = sum(http, ["200", ...(res.tool === "wrk" ? ["499"] : [])]);
      if (non200 > 0 || closedByClient > slack) {
        problems.push(`server: HTTP statuses ${JSON.stringify(http)}`);
      }
      if (row.scenario === "grpc" || row.scenario === "connect-h2") {
        if (!within(http["200"] ?? 0)) {
          problems.push(`server: ${http["200"] ?? 0} HTTP 200 for ${completed} calls`);
        }
      }
      if (row.scenario === "grpc") {
        const grpc = delta(before, after, "grpcStatus");
        const inHeaders = delta(before, after, "grpcStatusInHeaders");
        if (!within(grpc["0"] ?? 0) || sum(grpc, ["0"]) > 0 || sum(inHeaders) > 0) {
          problems.push(
            `server: grpc-status trailers ${JSON.stringify(grpc)}, in headers ${JSON.stringify(inHeaders)} for ${completed} calls`,
          );
        }
      }
    } else if (row.target === "grpc-js") {
      const users = delta(before, after, "getUser");
      if (!within(users.found ?? 0) || users.missing || users.error) {
        problems.push(`server: GetUser outcomes ${JSON.stringify(users)} for ${completed} calls`);
      }
    } else {
      const answered = delta(before, after, "answered");
      const key =
        row.scenario === "grpc"
          ? "h2-grpc"
          : row.scenario === "connect-h2"
            ? "h2-connect"
            : row.scenario === "connect-h1"
              ? "h1-connect"
              : "h1-grpc-web";
      if (!within(answered[key] ?? 0) || sum(answered, [key]) > 0) {
        problems.push(`server: answered ${JSON.stringify(answered)} for ${completed} calls`);
      }
    }
    return problems;
  };
}

// ==== server streaming ======================================================

async function streamingPhase(
  results: Results,
  s: Settings,
  seeded: Seeded,
  t: Omit<Targets, "bare">,
): Promise<void> {
  const plans = [
    { target: "sb-full", client: "connect", server: t.sbFull, token: seeded.token },
    { target: "sb-none", client: "connect", server: t.sbNone, token: undefined },
    { target: "grpc-js", client: "grpc-js", server: t.grpcJs, token: undefined },
    // The same client as the peer's, so the comparison does not hinge on the client.
    { target: "sb-full", client: "grpc-js", server: t.sbFull, token: seeded.token },
  ] as const;
  const rows: StreamRow[] = plans.map((p) => ({
    id: `${p.target}/${p.client}-client`,
    target: p.target,
    client: p.client,
    runs: [],
    problems: [],
  }));
  results.streaming.push(...rows);

  const once = async (i: number, seconds: number, warmup: number) => {
    const plan = plans[i]!;
    const client = new ClientProc("bench/clients/stream.ts", {
      url: plan.server.url,
      client: plan.client,
      token: plan.token,
      userId: seeded.userId,
      ids: s.streamIds,
      concurrency: s.streamConcurrency,
      warmupSeconds: warmup,
      seconds,
      maxCalls: 100_000,
    });
    await client.waitFor("measuring", 60_000);
    const otherCpu = otherCpuMeter(plan.server.pid);
    const cpu0 = cpuSeconds(plan.server.pid);
    const wall0 = performance.now();
    const res = await client.waitFor("result", (seconds + 60) * 1000);
    const cpuUsed = cpuSeconds(plan.server.pid) - cpu0;
    const serverCpu = cpuUsed / ((performance.now() - wall0) / 1000);
    const other = otherCpu();
    await client.finish();
    const cpuPerMessageUs = (cpuUsed * 1e6) / Number(res.messages);
    return { res, serverCpu, other, cpuPerMessageUs };
  };

  // Warm-up (full mode): one short run per row. Every client process also
  // warms itself up before it measures.
  for (let i = 0; i < plans.length && s.mode === "full"; i++) {
    try {
      const { res } = await once(i, s.warmupSeconds, s.streamClientWarmupSeconds);
      log(`warm-up stream ${rows[i]!.id}: ${Math.round(Number(res.msgsPerSec))} msgs/s`);
    } catch (err) {
      rows[i]!.problems.push(`warm-up: ${String(err)}`);
    }
  }
  const measureOnce = async (i: number): Promise<StreamRun> => {
    const { res, serverCpu, other, cpuPerMessageUs } = await once(
      i,
      s.streamSeconds,
      s.streamClientWarmupSeconds,
    );
    const problems: string[] = [];
    if (res.ok !== true || Number(res.errors) > 0) {
      problems.push(
        `client: ${String(res.errors)} failed calls (${String(res.firstError ?? res.error)})`,
      );
    }
    return {
      msgsPerSec: Number(res.msgsPerSec),
      messages: Number(res.messages),
      calls: Number(res.calls),
      seconds: Number(res.seconds),
      clientCpu: Number(res.clientCpu),
      serverCpu,
      otherCpu: other,
      cpuPerMessageUs,
      verified: problems.length === 0,
      problems,
    };
  };
  await rounds(results, rows, s.streamBudgetSeconds, async (i, round) => {
    const row = rows[i]!;
    try {
      const run = await measureOnce(i);
      row.problems.push(...run.problems);
      row.runs.push(run);
      log(
        `round ${round} stream ${row.id}: ${Math.round(run.msgsPerSec)} msgs/s, server CPU ${run.serverCpu.toFixed(2)}, client CPU ${run.clientCpu.toFixed(2)}, other processes ${run.otherCpu.toFixed(2)}${run.otherCpu > NOISY ? " (noisy)" : ""}`,
      );
    } catch (err) {
      row.problems.push(`round ${round}: ${String(err)}`);
    }
  });
  for (const row of rows) {
    const { runs, noisy } = usable(row.runs);
    row.usedRuns = runs.length;
    row.quietRuns = noisy ? 0 : runs.length;
    row.noisy = noisy;
    const v = runs.map((r) => r.msgsPerSec);
    row.medianMsgsPerSec = median(v);
    row.minMsgsPerSec = min(v);
    row.maxMsgsPerSec = max(v);
    row.medianClientCpu = median(runs.map((r) => r.clientCpu));
    row.medianServerCpu = median(runs.map((r) => r.serverCpu));
    row.maxOtherCpu = max(runs.map((r) => r.otherCpu));
    row.medianCpuPerMessageUs = median(runs.map((r) => r.cpuPerMessageUs));
    row.verified = row.runs.length >= s.reps && row.problems.length === 0;
  }
  const peer = rows.find((r) => r.target === "grpc-js");
  for (const row of rows) {
    row.vsGrpcJs = ratio(row.medianMsgsPerSec, peer?.medianMsgsPerSec);
    row.cpuVsGrpcJs = ratio(peer?.medianCpuPerMessageUs, row.medianCpuPerMessageUs);
  }
}

// ==== memory and fan-out ====================================================

async function memoryPhase(
  results: Results,
  s: Settings,
  dataDir: string,
  signingKey: string,
  seeded: Seeded,
  servers: ServerProc[],
): Promise<void> {
  const perConnection = Math.ceil(s.memoryStreams / s.memoryConnections) + 64;
  const sbMem = await ServerProc.start(
    "switchboard (memory)",
    "bench/servers/switchboard.ts",
    switchboardEnv(dataDir, signingKey, {
      BENCH_INTERCEPTORS: "full",
      MAX_CONCURRENT_STREAMS: String(Math.max(1100, perConnection)),
    }),
    { nodeFlags: ["--expose-gc"] },
  );
  servers.push(sbMem);
  results.memory.push(await idleStreams("sb-full", sbMem, s, seeded.token));

  // Fan-out on the same fresh server (the idle streams are closed by now).
  for (const subscribers of s.fanoutSubscribers) {
    let res = await fanout(sbMem, subscribers, s, seeded.token);
    // Latency suffers most from neighbours: when noisy, try again (full mode
    // only: quick has no extra rounds) and keep the quieter attempt; a failed
    // check of any attempt stays.
    for (
      let retry = 0;
      retry < s.extraRounds && res.available && (res.otherCpu ?? 0) > NOISY;
      retry++
    ) {
      log(`fan-out ${subscribers}: noisy (other processes ${res.otherCpu?.toFixed(2)}), again`);
      const again = await fanout(sbMem, subscribers, s, seeded.token);
      const problems = [...res.problems, ...again.problems];
      const kept = (again.otherCpu ?? 1) < (res.otherCpu ?? 1) ? again : res;
      res = { ...kept, problems, verified: problems.length === 0 };
    }
    results.fanout.push(res);
    log(
      res.available
        ? `fan-out ${subscribers}: p50 ${res.p50Ms?.toFixed(1)} ms, p99 ${res.p99Ms?.toFixed(1)} ms`
        : `fan-out ${subscribers}: not available (${res.reason})`,
    );
    if (!res.available) {
      for (const rest of s.fanoutSubscribers.filter((n) => n !== subscribers)) {
        results.fanout.push({ ...res, subscribers: rest });
      }
      break;
    }
  }
  await sbMem.stop();

  const grpcMem = await ServerProc.start(
    "grpc-js (memory)",
    "bench/servers/grpc-js.ts",
    { PORT: "0", DATA_DIR: dataDir, MAX_CONCURRENT_STREAMS: String(Math.max(1100, perConnection)) },
    { nodeFlags: ["--expose-gc"] },
  );
  servers.push(grpcMem);
  results.memory.push(await idleStreams("grpc-js", grpcMem, s, undefined));
  await grpcMem.stop();
}

async function idleStreams(
  name: "sb-full" | "grpc-js",
  server: ServerProc,
  s: Settings,
  token: string | undefined,
): Promise<MemoryResult> {
  const problems: string[] = [];
  const result: MemoryResult = { server: name, verified: false, problems };
  if (name === "sb-full" && !(await healthy(server.url, 5000))) problems.push("not healthy");
  const idle = snapshot(await server.stats(true));
  const client = new ClientProc("bench/clients/memory.ts", {
    url: server.url,
    token,
    streams: s.memoryStreams,
    connections: s.memoryConnections,
    warmStreams: 100,
    openTimeoutSeconds: 60,
  });
  try {
    const warmed = await client.waitFor("warmed", 60_000);
    if (Number(warmed.failed) > 0) problems.push(`${String(warmed.failed)} warm-up streams failed`);
    await sleep(300);
    const baseline = await server.stats(true);
    client.send("open");
    const opened = await client.waitFor("opened", 180_000);
    await sleep(500);
    const open = await server.stats(true);
    client.send("close");
    await client.waitFor("result", 60_000);
    await client.finish();
    await sleep(500);
    const afterClose = await server.stats(true);
    const n = Number(opened.opened);
    if (n !== s.memoryStreams) {
      problems.push(`${n}/${s.memoryStreams} streams opened (${String(opened.firstError)})`);
    }
    const serverOpen = open.counters.openStreams;
    if (typeof serverOpen === "number" && serverOpen !== n) {
      problems.push(`server counted ${serverOpen} open streams, client ${n}`);
    }
    const closedOpen = afterClose.counters.openStreams;
    if (typeof closedOpen === "number" && closedOpen !== 0) {
      problems.push(`${closedOpen} streams still open on the server after the client cancelled`);
    }
    const b = snapshot(baseline)!;
    const o = snapshot(open)!;
    Object.assign(result, {
      idle,
      baseline: b,
      open: o,
      afterClose: snapshot(afterClose),
      streamsRequested: s.memoryStreams,
      streamsOpened: n,
      ...(typeof serverOpen === "number" ? { serverOpenStreams: serverOpen } : {}),
      heapPerStream: n > 0 ? (o.heapUsed - b.heapUsed) / n : Number.NaN,
      rssPerStream: n > 0 ? (o.rss - b.rss) / n : Number.NaN,
      externalPerStream: n > 0 ? (o.external - b.external) / n : Number.NaN,
    });
    log(
      `memory ${name}: ${n} idle streams, heap +${Math.round((o.heapUsed - b.heapUsed) / Math.max(1, n))} B/stream, RSS +${Math.round((o.rss - b.rss) / Math.max(1, n))} B/stream`,
    );
  } catch (err) {
    problems.push(String(err));
    client.child.kill("SIGKILL");
  }
  result.verified = problems.length === 0;
  return result;
}

async function fanout(
  server: ServerProc,
  subscribers: number,
  s: Settings,
  token: string,
): Promise<FanoutResult> {
  const client = new ClientProc("bench/clients/fanout.ts", {
    url: server.url,
    token,
    subscribers,
    messages: s.fanoutMessages,
    warmupMessages: s.fanoutWarmupMessages,
    gapMs: 20,
  });
  const otherCpu = otherCpuMeter(server.pid);
  try {
    const res = await client.waitFor("result", 240_000);
    const other = otherCpu();
    await client.finish();
    if (res.available === false) {
      return {
        subscribers,
        available: false,
        reason: String(res.reason),
        verified: true,
        problems: [],
      };
    }
    const problems: string[] = [];
    if (res.ok !== true) {
      problems.push(
        `delivered ${String(res.delivered)}/${String(res.expected)}, stream errors ${String(res.streamErrors)} (${String(res.firstStreamError ?? res.error)})`,
      );
    }
    return {
      subscribers,
      available: true,
      messages: Number(res.messages),
      delivered: Number(res.delivered),
      expected: Number(res.expected),
      p50Ms: Number(res.p50Ms),
      p99Ms: Number(res.p99Ms),
      maxMs: Number(res.maxMs),
      sendRttP50Ms: Number(res.sendRttP50Ms),
      otherCpu: other,
      verified: problems.length === 0,
      problems,
    };
  } catch (err) {
    client.child.kill("SIGKILL");
    return { subscribers, available: true, verified: false, problems: [String(err)] };
  }
}

// ==== start-up ==============================================================

/**
 * Spawn of the real entry point (`node dist/main.js`, the bundle, as
 * `npm start` runs it) → first SERVING answer to grpc.health.v1.Health/Check,
 * polled every 5 ms. One unmeasured run first (warms the OS file cache).
 */
async function startupPhase(
  s: Settings,
  dataDir: string,
  signingKey: string,
): Promise<StartupResult> {
  const result: StartupResult = { runsMs: [], cpuMs: [], problems: [] };
  for (let i = 0; i <= s.startupRuns; i++) {
    const port = await freePort();
    const env = switchboardEnv(dataDir, signingKey, { PORT: String(port) });
    const url = `http://127.0.0.1:${port}`;
    const t0 = performance.now();
    const server = launch(
      "server",
      process.execPath,
      [...SERVER_NODE_FLAGS, "dist/main.js"],
      30_000,
      env,
    );
    let elapsed = Number.NaN;
    let cpu = Number.NaN;
    const deadline = t0 + 20_000;
    while (performance.now() < deadline && server.child.exitCode === null) {
      if (await healthy(url, 500)) {
        elapsed = performance.now() - t0;
        cpu = cpuSeconds(server.child.pid) * 1000;
        break;
      }
      await sleep(5);
    }
    // taskset execs node, so this pid is the server's: a graceful SIGTERM.
    server.child.kill("SIGTERM");
    const outcome = await server.result;
    if (outcome.code !== 0)
      result.problems.push(`run ${i}: exit ${outcome.code} ${outcome.stderr.slice(-300)}`);
    if (!Number.isFinite(elapsed)) {
      result.problems.push(`run ${i}: no healthy answer within 20 s`);
      continue;
    }
    if (i > 0) {
      result.runsMs.push(elapsed);
      result.cpuMs.push(cpu);
    }
    log(
      `start-up ${i === 0 ? "(warm-up)" : `${i}/${s.startupRuns}`}: ${elapsed.toFixed(0)} ms (server CPU ${cpu.toFixed(0)} ms)`,
    );
  }
  result.medianMs = median(result.runsMs);
  result.minMs = min(result.runsMs);
  result.maxMs = max(result.runsMs);
  result.medianCpuMs = median(result.cpuMs);
  return result;
}

// ==== CPU profile ===========================================================

async function profilePhase(
  resultsDir: string,
  s: Settings,
  scratch: string,
  dataDir: string,
  signingKey: string,
  seeded: Seeded,
  servers: ServerProc[],
): Promise<ProfileResult> {
  const result: ProfileResult = { calls: s.profileCalls, verified: false, problems: [] };
  const profDir = join(scratch, "profile");
  const server = await ServerProc.start(
    "switchboard (profiled)",
    "bench/servers/switchboard.ts",
    switchboardEnv(dataDir, signingKey, { BENCH_INTERCEPTORS: "full" }),
    // No --cpu-prof-name: tsx's loader thread writes a profile too, and one
    // name would let the two overwrite each other.
    { nodeFlags: ["--cpu-prof", "--cpu-prof-dir", profDir] },
  );
  servers.push(server);
  const spec = {
    url: `${server.url}${GET_USER_PATH}`,
    bodyFile: join(scratch, "get-user.grpc.bin"),
    headers: {
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${seeded.token}`,
    },
    clients: s.h2Clients,
    streams: s.h2Streams,
  };
  const pre = await checkGetUser(server.url, "grpc", seeded.userId, seeded.token);
  if (pre) result.problems.push(`pre-check: ${pre}`);
  await h2load(spec, { n: s.profileWarmupCalls });
  const before = await server.stats();
  const from = await server.mark();
  const res = await h2load(spec, { n: s.profileCalls });
  const to = await server.mark();
  const after = await server.stats();
  result.rps = res.rps;
  if (!res.ok) result.problems.push(`load generator: ${describeLoadProblem(res)}`);
  const found = delta(before, after, "getUser").found ?? 0;
  const grpc = delta(before, after, "grpcStatus");
  if (found !== s.profileCalls || (grpc["0"] ?? 0) !== s.profileCalls || sum(grpc, ["0"]) > 0) {
    result.problems.push(`server: found ${found}, grpc-status ${JSON.stringify(grpc)}`);
  }
  await server.stop();
  // CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile: the main thread is 0.
  const file = existsSync(profDir)
    ? readdirSync(profDir)
        .filter((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
        .map((f) => join(profDir, f))[0]
    : undefined;
  if (!file) {
    result.problems.push("no main-thread .cpuprofile was written");
    return result;
  }
  const kept = join(resultsDir, "profile-unary.cpuprofile");
  writeFileSync(kept, readFileSync(file));
  result.profileFile = "bench/results/profile-unary.cpuprofile";
  const summary = await run(
    "load",
    process.execPath,
    [
      join(ROOT, "bench/profile-summary.mjs"),
      kept,
      "--from",
      String(from),
      "--to",
      String(to),
      "--md",
      join(resultsDir, "profile-unary.md"),
      "--json",
      "--title",
      "CPU profile: Switchboard, unary GetUser over gRPC (h2c), full interceptor chain",
      "--note",
      `${s.profileCalls.toLocaleString("en-US")} calls measured (after ${s.profileWarmupCalls.toLocaleString("en-US")} warm-up calls, excluded), h2load -c ${s.h2Clients} -m ${s.h2Streams}, ${Math.round(res.rps).toLocaleString("en-US")} req/s under the profiler; server on core 0, h2load on core 1; \`node --cpu-prof\` (1 ms sampling), samples outside the measured window dropped. Verified: ${result.problems.length === 0 ? "every call found the user and ended with grpc-status 0" : result.problems.join("; ")}.`,
    ],
    120_000,
  );
  if (summary.code !== 0) {
    result.problems.push(`profile-summary failed: ${summary.stderr.slice(-500)}`);
  } else {
    try {
      result.summary = JSON.parse(summary.stdout) as ProfileResult["summary"];
    } catch {
      result.problems.push("profile-summary printed no JSON");
    }
  }
  result.verified = result.problems.length === 0;
  log(`profile: ${Math.round(res.rps)} req/s under --cpu-prof, summary in profile-unary.md`);
  return result;
}

// ==== goals =================================================================

/** The issue's goals, judged from the figures (reported, never asserted). */
export function goals(r: Results): Goal[] {
  const g: Goal[] = [];
  const row = (scenario: string, target: string) =>
    r.unary.find((u) => u.scenario === scenario && u.target === target);
  const full = row("grpc", "sb-full");
  const vsPeer = full?.vsGrpcJs;
  g.push({
    name: "unary gRPC, full chain vs grpc-js",
    target: "≥ 1.0× (first mark ≥ 0.5×)",
    measured: `${fmtTimes(vsPeer)} (by CPU per call: ${fmtTimes(full?.cpuVsGrpcJs)})`,
    status: statusOf(vsPeer, (v) => (v >= 1 ? "met" : v >= 0.5 ? "first mark met" : "not met")),
  });
  g.push({
    name: "unary gRPC, full chain vs bare http2 (stretch)",
    target: "≥ 0.6×",
    measured: `${fmtTimes(full?.vsBare)} (by CPU per call: ${fmtTimes(ratio(row("grpc", "bare")?.medianCpuPerCallUs, full?.medianCpuPerCallUs))})`,
    status: statusOf(full?.vsBare, (v) => (v >= 0.6 ? "met" : "not met")),
  });
  g.push({
    name: "chain cost (gRPC unary, 1 − full/none)",
    target: "≤ 15 %",
    measured: `${fmtPct(full?.chainCost)} (by CPU per call: ${fmtPct(1 - ratio(row("grpc", "sb-none")?.medianCpuPerCallUs, full?.medianCpuPerCallUs))})`,
    status: statusOf(full?.chainCost, (v) => (v <= 0.15 ? "met" : "not met")),
  });
  const stream = r.streaming.find((s) => s.target === "sb-full" && s.client === "connect");
  g.push({
    name: "server streaming, Switchboard (connect-node client) vs grpc-js (grpc-js client)",
    target: "≥ 1.3×",
    measured: `${fmtTimes(stream?.vsGrpcJs)} (by CPU per message: ${fmtTimes(stream?.cpuVsGrpcJs)})`,
    status: statusOf(stream?.vsGrpcJs, (v) => (v >= 1.3 ? "met" : "not met")),
  });
  const fan = r.fanout.find((f) => f.subscribers === 1000);
  g.push({
    name: "chat fan-out, 1,000 subscribers, p99",
    target: "< 50 ms",
    measured: !fan
      ? "not run"
      : !fan.available
        ? "ChatService not available"
        : `${fan.p99Ms?.toFixed(1)} ms${(fan.otherCpu ?? 0) > NOISY ? ` (⚠ noisy: other processes took ${fan.otherCpu?.toFixed(2)} of the server's core)` : ""}`,
    status: !fan?.available
      ? "not measured"
      : statusOf(fan.p99Ms, (v) => (v < 50 ? "met" : "not met")),
  });
  const mem = r.memory.find((m) => m.server === "sb-full");
  g.push({
    name: `heap per idle stream (${mem?.streamsOpened?.toLocaleString("en-US") ?? "—"} WatchUsers streams)`,
    target: "≤ 20 KB",
    measured: Number.isFinite(mem?.heapPerStream)
      ? `${((mem?.heapPerStream ?? 0) / 1024).toFixed(1)} KB`
      : "—",
    status: statusOf(mem?.heapPerStream, (v) => (v <= 20 * 1024 ? "met" : "not met")),
  });
  g.push({
    name: "start-up, spawn → first healthy response (median)",
    target: "< 1 s",
    measured: Number.isFinite(r.startup?.medianMs)
      ? `${Math.round(r.startup?.medianMs ?? 0)} ms`
      : "—",
    status: statusOf(r.startup?.medianMs, (v) => (v < 1000 ? "met" : "not met")),
  });
  return g;
}

function fmtPct(v: number | undefined): string {
  return v !== undefined && Number.isFinite(v) ? `${(v * 100).toFixed(1)} %` : "—";
}

function fmtTimes(v: number | undefined): string {
  return v !== undefined && Number.isFinite(v) ? `${v.toFixed(2)}×` : "—";
}

function statusOf(v: number | undefined, judge: (v: number) => Goal["status"]): Goal["status"] {
  return v !== undefined && Number.isFinite(v) ? judge(v) : "not measured";
}
