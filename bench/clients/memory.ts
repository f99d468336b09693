import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { authHeaders, emit, fail, nextCommand, options } from "./common.js";

/**
 * Idle streams for the memory scenario: WatchUsers calls over `connections`
 * HTTP/2 connections (one connect-node session manager each), each counted
 * as open once its first item (the seeded user) arrived; after that the
 * server has nothing more to send, so the stream sits idle.
 *
 * Protocol with the runner (stdin commands, stdout JSON lines):
 *   start                → opens and closes `warmStreams` streams (warms the
 *                          server's code paths), prints {"type":"warmed"}
 *   "open" on stdin      → opens `streams` streams, prints {"type":"opened",…}
 *   "close" on stdin     → cancels them all, prints {"type":"result",…}, exits
 * A closed stdin cancels everything and exits.
 */
interface Options {
  readonly url: string;
  readonly token?: string;
  readonly streams: number;
  readonly connections: number;
  readonly warmStreams: number;
  readonly openTimeoutSeconds: number;
}

const opts = options<Options>();
const managers = Array.from({ length: opts.connections }, () => new Http2SessionManager(opts.url));
const clients = managers.map((sessionManager) =>
  createClient(UserService, createGrpcTransport({ baseUrl: opts.url, sessionManager })),
);
const headers = authHeaders(opts.token);

interface Opened {
  readonly controller: AbortController;
  readonly done: Promise<void>;
}

/** Opens one stream; resolves once its first item arrived. */
async function openOne(index: number): Promise<Opened> {
  const controller = new AbortController();
  const client = clients[index % clients.length]!;
  let first!: () => void;
  let failed!: (err: unknown) => void;
  const firstItem = new Promise<void>((resolve, reject) => {
    first = resolve;
    failed = reject;
  });
  const done = (async () => {
    try {
      for await (const _item of client.watchUsers({}, { headers, signal: controller.signal })) {
        first();
      }
      failed(new Error("stream ended"));
    } catch (err) {
      failed(err);
    }
  })();
  const timeout = setTimeout(
    () => controller.abort(new Error("no first item in time")),
    opts.openTimeoutSeconds * 1000,
  );
  try {
    await firstItem;
  } finally {
    clearTimeout(timeout);
  }
  return { controller, done };
}

/** Opens `count` streams, at most 200 being set up at a time. */
async function openMany(count: number) {
  const open: Opened[] = [];
  let failed = 0;
  let firstError: string | undefined;
  const start = performance.now();
  for (let i = 0; i < count; i += 200) {
    const batch = await Promise.allSettled(
      Array.from({ length: Math.min(200, count - i) }, (_, k) => openOne(i + k)),
    );
    for (const r of batch) {
      if (r.status === "fulfilled") open.push(r.value);
      else {
        failed++;
        firstError ??= String(r.reason instanceof Error ? r.reason.message : r.reason);
      }
    }
  }
  return { open, failed, firstError, seconds: (performance.now() - start) / 1000 };
}

async function closeAll(open: readonly Opened[]): Promise<number> {
  let canceledOk = 0;
  for (const o of open) o.controller.abort(new ConnectError("bench done", Code.Canceled));
  const results = await Promise.allSettled(open.map((o) => o.done));
  for (const r of results) if (r.status === "fulfilled") canceledOk++;
  return canceledOk;
}

const hardStop = setTimeout(() => fail(new Error("memory client ran too long")), 10 * 60_000);
hardStop.unref();
try {
  const warm = await openMany(opts.warmStreams);
  await closeAll(warm.open);
  await sleep(200);
  emit({ type: "warmed", opened: warm.open.length, failed: warm.failed });
  if ((await nextCommand()) !== "open") process.exit(0);
  const run = await openMany(opts.streams);
  emit({
    type: "opened",
    opened: run.open.length,
    failed: run.failed,
    firstError: run.firstError,
    seconds: run.seconds,
  });
  await nextCommand();
  await closeAll(run.open);
  for (const m of managers) m.abort();
  emit({ type: "result", ok: run.failed === 0, opened: run.open.length, failed: run.failed });
  process.exit(0);
} catch (err) {
  fail(err);
}
