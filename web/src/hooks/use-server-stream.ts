import type {
  DescMessage,
  DescMethodServerStreaming,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import { useTransport } from "@connectrpc/connect-query";
import { type QueryKey, skipToken, useQuery, useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useMemo, useRef, useState } from "react";
import { isRetryable, type RpcError, rpcError } from "../errors.js";

/**
 * Runs a server stream and keeps its result in TanStack Query's cache.
 *
 * connect-query has hooks for unary calls only. This one covers the app's
 * server streams (the live user list, a chat room, a lookup):
 * - messages are folded into a cached state with `reduce` (batched per
 *   task) under `queryKey`, so any component can read it with
 *   `useQuery`/`getQueryData` and it survives remounts (gcTime);
 * - the resume position lives IN that state (a cursor, the last message id):
 *   `request(state)` builds each (re)connection's request from it, so a
 *   reconnect — or a remount — continues where the last stream stopped,
 *   with no gap and no duplicate;
 * - failures that are worth retrying (Unavailable, network, deadline, rate
 *   limits, internal) reconnect with exponential backoff and full jitter,
 *   capped, or after the server's RetryInfo delay; the attempt counter resets
 *   once a connection delivered something;
 * - a stream that ends by itself is reconnected too (a live feed never
 *   ends on purpose) unless `finite` is set (then: "done");
 * - unmount, a disabled hook or a new transport aborts the call.
 */

export type StreamStatus = "idle" | "connecting" | "live" | "reconnecting" | "done" | "error";

export interface ServerStreamOptions<I extends DescMessage, O extends DescMessage, S> {
  readonly method: DescMethodServerStreaming<I, O>;
  /** Where the state is cached. A new key starts a new stream. */
  readonly queryKey: QueryKey;
  /** The state before any message. */
  readonly initialState: () => S;
  /** The request for a (re)connection, from the state so far (the resume position). */
  readonly request: (state: S) => MessageInitShape<I>;
  /** Folds a batch of messages (in order) into the state. */
  readonly reduce: (state: S, messages: readonly MessageShape<O>[]) => S;
  readonly enabled?: boolean;
  /** The stream ends by itself when complete (status "done" instead of a reconnect). */
  readonly finite?: boolean;
  /** Backoff: first delay and cap, ms (default 500 and 10,000). */
  readonly backoff?: { readonly baseMs: number; readonly maxMs: number };
}

export interface ServerStreamResult<S> {
  readonly data: S;
  readonly status: StreamStatus;
  /** The last failure (kept while reconnecting; cleared once live again). */
  readonly error: RpcError | undefined;
  /** When the next attempt starts (ms since epoch), while reconnecting. */
  readonly retryAt: number | undefined;
  /** Consecutive failed attempts. */
  readonly attempt: number;
  /** Skips the wait before the next attempt, or restarts a stream that gave up. */
  readonly retryNow: () => void;
}

/** How long an unanswered, unfailed call takes to count as open (see the loop). */
const QUIET_OPEN_MS = 1500;

/** Full-jitter exponential backoff: a random delay in [d/2, d], d = min(cap, base·2^n). */
export function backoffDelay(attempt: number, baseMs: number, maxMs: number): number {
  const d = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

export function useServerStream<I extends DescMessage, O extends DescMessage, S>(
  options: ServerStreamOptions<I, O, S>,
): ServerStreamResult<S> {
  const transport = useTransport();
  const queryClient = useQueryClient();
  const { method, queryKey, enabled = true } = options;
  const keyHash = JSON.stringify(queryKey);

  // The latest callbacks, without restarting the stream when they change.
  const latest = useRef(options);
  latest.current = options;

  const [status, setStatus] = useState<StreamStatus>("idle");
  const [error, setError] = useState<RpcError | undefined>();
  const [retryAt, setRetryAt] = useState<number | undefined>();
  const [attempt, setAttempt] = useState(0);
  const [restarts, setRestarts] = useState(0);
  const wake = useRef<(() => void) | undefined>(undefined);

  const retryNow = useCallback(() => {
    if (wake.current) wake.current();
    else setRestarts((n) => n + 1);
  }, []);

  // biome-ignore lint/correctness/useExhaustiveDependencies: keyHash stands for queryKey; restarts re-runs on purpose
  useEffect(() => {
    if (!enabled) {
      setStatus("idle");
      return;
    }
    const abort = new AbortController();
    const { signal } = abort;
    const key = latest.current.queryKey;
    const stateNow = (): S => queryClient.getQueryData<S>(key) ?? latest.current.initialState();

    // Messages are applied in batches: one cache update per task.
    let pending: MessageShape<O>[] = [];
    let flushTimer: ReturnType<typeof setTimeout> | undefined;
    const flush = () => {
      if (flushTimer !== undefined) clearTimeout(flushTimer);
      flushTimer = undefined;
      if (pending.length === 0) return;
      const batch = pending;
      pending = [];
      queryClient.setQueryData<S>(key, (old) =>
        latest.current.reduce(old ?? latest.current.initialState(), batch),
      );
    };

    /** Waits `ms`, or less if woken (retryNow, back online, tab visible again). */
    const wait = (ms: number) =>
      new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          wake.current = undefined;
          window.removeEventListener("online", done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, ms);
        wake.current = done;
        window.addEventListener("online", done);
        signal.addEventListener("abort", done);
      });

    const run = async () => {
      const { baseMs, maxMs } = latest.current.backoff ?? { baseMs: 500, maxMs: 10_000 };
      let failures = 0;
      setError(undefined);
      while (!signal.aborted) {
        setStatus(failures === 0 ? "connecting" : "reconnecting");
        setRetryAt(undefined);
        let delay: number;
        // A stream resuming at the end of its feed has nothing to send, and
        // the server sends response headers only with the first message: a
        // call that has neither failed nor answered for a moment is open.
        const quiet = setTimeout(() => {
          if (!signal.aborted) setStatus("live");
        }, QUIET_OPEN_MS);
        try {
          const request = latest.current.request(stateNow());
          const response = await transport
            .stream(method, signal, undefined, undefined, createAsyncIterable([request]))
            .finally(() => clearTimeout(quiet));
          setStatus("live");
          setError(undefined);
          setAttempt(0);
          for await (const message of response.message) {
            if (failures > 0) failures = 0;
            pending.push(message);
            flushTimer ??= setTimeout(flush, 0);
          }
          flush();
          if (latest.current.finite) {
            setStatus("done");
            return;
          }
          // A live feed ended cleanly (e.g. the server rotated it): resume.
          delay = backoffDelay(1, baseMs, maxMs);
        } catch (err) {
          flush();
          if (signal.aborted) return;
          const e = rpcError(err);
          setError(e);
          if (!isRetryable(e)) {
            setStatus("error");
            return;
          }
          failures++;
          setAttempt(failures);
          delay = e.retryDelayMs ?? backoffDelay(failures, baseMs, maxMs);
        }
        if (signal.aborted) return;
        setStatus("reconnecting");
        setRetryAt(Date.now() + delay);
        await wait(delay);
      }
    };
    void run();
    const onVisible = () => {
      if (document.visibilityState === "visible") wake.current?.();
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      document.removeEventListener("visibilitychange", onVisible);
      abort.abort();
      flush();
    };
  }, [enabled, transport, method, keyHash, queryClient, restarts]);

  const cached = useQuery<S>({ queryKey, queryFn: skipToken, staleTime: Number.POSITIVE_INFINITY });
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new key means a new initial state
  const initial = useMemo(() => latest.current.initialState(), [keyHash]);
  return {
    data: cached.data ?? initial,
    status,
    error,
    retryAt,
    attempt,
    retryNow,
  };
}
