import { createInterface } from "node:readline";

/**
 * The bench-only side channel every bench server shares: the runner writes
 * one command per line on the server's stdin and reads one JSON line per
 * answer on its stdout. Nothing of this exists in the real server.
 *
 *   stats <id>  → {"type":"stats","id":…,"memory":process.memoryUsage(),"counters":…}
 *   gc-stats <id> → the same after a full GC (when the process runs with
 *                 --expose-gc). Only for memory figures: a forced GC shrinks
 *                 V8's young generation, and the next seconds of load then
 *                 run measurably slower while it grows back.
 *   mark <id>   → {"type":"mark","id":…,"hrtimeUs":…} (monotonic clock, the
 *                 one V8's CPU profiler stamps samples with)
 *   stop <id>   → graceful stop, then {"type":"stopped",…} and exit 0
 *
 * A closed stdin (the runner died) or SIGTERM/SIGINT also stop the server,
 * so no bench server outlives its runner.
 */
export interface ControlOptions {
  /** What the server counted so far (calls, statuses, …). */
  readonly counters: () => Record<string, unknown>;
  /** Graceful shutdown of the server. */
  readonly stop: () => Promise<void>;
}

export type Counter = Record<string, number>;

/** Adds one to `counter[key]`. */
export function bump(counter: Counter, key: string | number): void {
  const k = String(key);
  counter[k] = (counter[k] ?? 0) + 1;
}

/** Prints one JSON line on stdout. */
export function emit(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

const maybeGc = (globalThis as { gc?: () => void }).gc;

function statsLine(
  id: string,
  counters: () => Record<string, unknown>,
  gc: boolean,
): Record<string, unknown> {
  if (gc) maybeGc?.();
  return { type: "stats", id, memory: process.memoryUsage(), counters: counters() };
}

/** Starts answering the runner's commands; call it once the server listens. */
export function serveControl(options: ControlOptions): void {
  let stopping = false;
  const stop = (id: string) => {
    if (stopping) return;
    stopping = true;
    const hardExit = setTimeout(() => process.exit(1), 15_000);
    hardExit.unref();
    options.stop().then(
      () => {
        emit({ ...statsLine(id, options.counters, false), type: "stopped" });
        process.exit(0);
      },
      (err: unknown) => {
        process.stderr.write(`bench server: stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  const lines = createInterface({ input: process.stdin });
  lines.on("line", (line) => {
    const [command = "", id = ""] = line.trim().split(/\s+/);
    if (command === "stats" || command === "gc-stats") {
      emit(statsLine(id, options.counters, command === "gc-stats"));
    } else if (command === "mark") {
      emit({ type: "mark", id, hrtimeUs: Number(process.hrtime.bigint() / 1000n) });
    } else if (command === "stop") stop(id);
    else emit({ type: "error", id, message: `unknown command ${JSON.stringify(command)}` });
  });
  lines.on("close", () => stop("stdin-closed"));
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}
