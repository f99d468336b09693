import { setTimeout as sleep } from "node:timers/promises";

/** Reconnect delays: 250 ms doubling to 10 s, with jitter. */
export const BACKOFF = { initialMs: 250, maxMs: 10_000 } as const;

/**
 * The delay before reconnect attempt `attempt` (0-based): exponential with
 * "equal jitter" (between half and all of the step), and never shorter than
 * what the server asked for (google.rpc.RetryInfo).
 */
export function backoffMs(attempt: number, serverDelayMs?: number, random = Math.random): number {
  const step = Math.min(BACKOFF.maxMs, BACKOFF.initialMs * 2 ** Math.min(attempt, 16));
  const jittered = step / 2 + (random() * step) / 2;
  return Math.round(Math.max(jittered, serverDelayMs ?? 0));
}

/** Waits `ms`, or less if `signal` aborts (then it resolves quietly). */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await sleep(ms, undefined, signal ? { signal } : {});
  } catch {
    // aborted
  }
}
