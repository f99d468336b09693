/** The shapes written to bench/results/latest.json. */

export interface Machine {
  readonly cpuModel: string;
  readonly cores: number;
  readonly node: string;
  readonly os: string;
  readonly memoryGb: number;
  readonly date: string;
  readonly pinning: string;
  readonly tools: Record<string, string>;
  /** `git rev-parse --short HEAD`, plus whether tracked files had uncommitted changes. */
  readonly source?: string;
}

export interface Settings {
  readonly mode: "quick" | "full";
  /** Warm-up per unary row (h2load -D / wrk -d), s. */
  readonly warmupSeconds: number;
  /** Target length of one measured unary run, s. */
  readonly runSeconds: number;
  /** Measured runs per row (interleaved across rows). */
  readonly reps: number;
  /** h2load connections × streams per connection. */
  readonly h2Clients: number;
  readonly h2Streams: number;
  /** wrk connections (HTTP/1.1: one request in flight each). */
  readonly wrkConnections: number;
  /** Server streaming: ids per GetUserStream call, concurrent calls, seconds per run. */
  readonly streamIds: number;
  readonly streamConcurrency: number;
  readonly streamSeconds: number;
  readonly streamClientWarmupSeconds: number;
  /** Idle WatchUsers streams and the HTTP/2 connections carrying them. */
  readonly memoryStreams: number;
  readonly memoryConnections: number;
  /** Fan-out subscriber counts and messages sent per count. */
  readonly fanoutSubscribers: readonly number[];
  readonly fanoutMessages: number;
  /** Messages sent first to each room and not measured (cold JIT). */
  readonly fanoutWarmupMessages: number;
  readonly startupRuns: number;
  /**
   * Rows with fewer than `reps` quiet runs (other processes ≤ 10 % of the
   * server's core) get up to this many extra rounds, while the phase is
   * within its time budget (seconds, below).
   */
  readonly extraRounds: number;
  readonly unaryBudgetSeconds: number;
  readonly streamBudgetSeconds: number;
  /** GetUser calls before and during the CPU profile. */
  readonly profileWarmupCalls: number;
  readonly profileCalls: number;
}

/** One measured load run. */
export interface UnaryRun {
  readonly rps: number;
  readonly requests: number;
  readonly seconds: number;
  /** h2load: mean time per request; wrk: p50. */
  readonly latencyMs: number;
  /** wrk only. */
  readonly p99Ms?: number;
  /** Server CPU seconds per wall second during the run (1.0 = one core busy). */
  readonly serverCpu: number;
  /** CPU other processes used on the server's core during the run (same unit). */
  readonly otherCpu: number;
  /** Server CPU time per completed call, µs: robust to other processes, unlike req/s. */
  readonly cpuPerCallUs: number;
  readonly verified: boolean;
  readonly problems: readonly string[];
}

export interface UnaryRow {
  readonly id: string;
  readonly scenario: "grpc" | "connect-h2" | "connect-h1" | "grpc-web-h1";
  readonly target: "sb-full" | "sb-none" | "bare" | "grpc-js";
  readonly tool: "h2load" | "wrk";
  readonly loadShape: string;
  /** h2load -n for the measured runs (calibrated in the warm-up). */
  n?: number;
  readonly runs: UnaryRun[];
  /** Runs the figures come from: the quiet ones if any, else all (then `noisy`). */
  usedRuns?: number;
  quietRuns?: number;
  noisy?: boolean;
  medianRps?: number;
  minRps?: number;
  maxRps?: number;
  medianLatencyMs?: number;
  medianServerCpu?: number;
  maxOtherCpu?: number;
  medianCpuPerCallUs?: number;
  /** grpc-js's CPU per call ÷ this row's (higher is better, like the throughput ratio). */
  cpuVsGrpcJs?: number;
  vsGrpcJs?: number;
  vsBare?: number;
  /** 1 − full/none, for the full-chain rows. */
  chainCost?: number;
  verified?: boolean;
  readonly problems: string[];
}

export interface StreamRun {
  readonly msgsPerSec: number;
  readonly messages: number;
  readonly calls: number;
  readonly seconds: number;
  readonly clientCpu: number;
  readonly serverCpu: number;
  readonly otherCpu: number;
  /** Server CPU time per streamed message, µs. */
  readonly cpuPerMessageUs: number;
  readonly verified: boolean;
  readonly problems: readonly string[];
}

export interface StreamRow {
  readonly id: string;
  readonly target: "sb-full" | "sb-none" | "grpc-js";
  readonly client: "connect" | "grpc-js";
  readonly runs: StreamRun[];
  usedRuns?: number;
  quietRuns?: number;
  noisy?: boolean;
  medianMsgsPerSec?: number;
  minMsgsPerSec?: number;
  maxMsgsPerSec?: number;
  medianClientCpu?: number;
  medianServerCpu?: number;
  maxOtherCpu?: number;
  medianCpuPerMessageUs?: number;
  cpuVsGrpcJs?: number;
  vsGrpcJs?: number;
  verified?: boolean;
  readonly problems: string[];
}

export interface MemorySnapshot {
  readonly rss: number;
  readonly heapUsed: number;
  readonly external: number;
}

export interface MemoryResult {
  readonly server: "sb-full" | "grpc-js" | "bare";
  /** After start (and one call), after a full GC. */
  readonly idle?: MemorySnapshot;
  /** After warm-up streams were opened and closed, after a full GC. */
  readonly baseline?: MemorySnapshot;
  readonly open?: MemorySnapshot;
  readonly afterClose?: MemorySnapshot;
  readonly streamsRequested?: number;
  readonly streamsOpened?: number;
  readonly serverOpenStreams?: number;
  readonly heapPerStream?: number;
  readonly rssPerStream?: number;
  readonly externalPerStream?: number;
  verified: boolean;
  readonly problems: string[];
}

export interface FanoutResult {
  readonly subscribers: number;
  readonly available: boolean;
  readonly reason?: string;
  readonly messages?: number;
  readonly delivered?: number;
  readonly expected?: number;
  readonly p50Ms?: number;
  readonly p99Ms?: number;
  readonly maxMs?: number;
  readonly sendRttP50Ms?: number;
  /** CPU other processes used on the server's core during the scenario. */
  readonly otherCpu?: number;
  readonly verified: boolean;
  readonly problems: string[];
}

export interface StartupResult {
  readonly runsMs: number[];
  /** CPU time the server process had used when it first answered (less disturbed by neighbours). */
  readonly cpuMs: number[];
  medianCpuMs?: number;
  medianMs?: number;
  minMs?: number;
  maxMs?: number;
  readonly problems: string[];
}

export interface ProfileResult {
  readonly calls: number;
  rps?: number;
  verified: boolean;
  readonly problems: string[];
  profileFile?: string;
  summary?: {
    readonly samples: number;
    readonly windowMs: number;
    readonly categories: ReadonlyArray<{ name: string; selfPct: number }>;
    readonly packages: ReadonlyArray<{ name: string; selfPct: number }>;
    readonly functions: ReadonlyArray<{ name: string; location: string; selfPct: number }>;
  };
}

export interface Goal {
  readonly name: string;
  readonly target: string;
  readonly measured: string;
  readonly status: "met" | "not met" | "first mark met" | "not measured";
}

/** How busy the machine was with other processes. */
export interface Noise {
  /** /proc/loadavg when the run started. */
  readonly loadAverageAtStart: string;
  /** Measured runs (unary and streaming) and how many of them were quiet. */
  runs: number;
  quietRuns: number;
}

export interface Results {
  readonly machine: Machine;
  readonly noise: Noise;
  readonly settings: Settings;
  readonly unary: UnaryRow[];
  readonly streaming: StreamRow[];
  readonly memory: MemoryResult[];
  readonly fanout: FanoutResult[];
  startup?: StartupResult;
  profile?: ProfileResult;
  goals: Goal[];
  readonly errors: string[];
  /** Warning lines the bench servers printed on stderr (first server that printed each). */
  readonly serverWarnings: Array<{ server: string; text: string }>;
  elapsedSeconds?: number;
}
