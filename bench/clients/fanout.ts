import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { ChatService } from "../../gen/switchboard/chat/v1/chat_pb.js";
import { authHeaders, emit, fail, options, percentile } from "./common.js";

/**
 * Chat fan-out: `subscribers` ChatService.Subscribe streams on one room
 * (spread over a few HTTP/2 connections) and one sender calling
 * ChatService.Send `messages` times, one at a time, on its own connection.
 * Latency = the time a subscriber receives a message − the time the sender
 * started the Send call that stored it, on this process's one monotonic
 * clock. The next message is sent once every subscriber got the previous
 * one (or after 5 s), plus a short gap.
 *
 * If the server does not serve ChatService (a probe Send fails with
 * UNIMPLEMENTED), prints {"type":"result","available":false,…} instead.
 */
interface Options {
  readonly url: string;
  readonly token: string;
  readonly subscribers: number;
  readonly messages: number;
  readonly gapMs: number;
}

const opts = options<Options>();
const headers = authHeaders(opts.token);
const room = `bench-${process.pid}-${Date.now() % 1e9}`;
const connections = Math.min(8, Math.max(1, Math.ceil(opts.subscribers / 250)));
const managers = Array.from({ length: connections + 1 }, () => new Http2SessionManager(opts.url));
const clientOn = (i: number) =>
  createClient(
    ChatService,
    createGrpcTransport({ baseUrl: opts.url, sessionManager: managers[i % managers.length]! }),
  );
const sender = clientOn(connections);
const closeAll = () => {
  for (const m of managers) m.abort();
};

const hardStop = setTimeout(() => fail(new Error("fan-out client ran too long")), 5 * 60_000);
hardStop.unref();

try {
  // Is ChatService served at all?
  try {
    await sender.send(
      { room, clientMsgId: `probe-${room}`, text: "probe" },
      { headers, timeoutMs: 5000 },
    );
  } catch (err) {
    const e = ConnectError.from(err);
    if (e.code === Code.Unimplemented || e.code === Code.NotFound) {
      emit({
        type: "result",
        ok: true,
        available: false,
        reason: `ChatService.Send answered ${Code[e.code]}: ${e.rawMessage}`,
      });
      closeAll();
      process.exit(0);
    }
    throw e;
  }

  const sendStart = new Map<number, number>();
  const delivered = new Map<number, number>();
  const latencies: number[] = [];
  const waiters = new Map<number, () => void>();
  let ready = 0;
  let streamErrors = 0;
  let firstStreamError: string | undefined;
  let readyResolve!: () => void;
  let readyReject!: (err: Error) => void;
  const allReadyPromise = new Promise<void>((resolve, reject) => {
    readyResolve = resolve;
    readyReject = reject;
  });
  const controller = new AbortController();

  const subscribe = async (i: number) => {
    let first = true;
    try {
      for await (const res of clientOn(i).subscribe(
        { room },
        { headers, signal: controller.signal },
      )) {
        if (first) {
          first = false;
          if (++ready === opts.subscribers) readyResolve();
        }
        const kind = res.event?.kind;
        if (kind?.case !== "message" || !kind.value.text.startsWith("bench:")) continue;
        const seq = Number(kind.value.text.slice("bench:".length));
        const started = sendStart.get(seq);
        if (started === undefined) continue;
        latencies.push(performance.now() - started);
        const n = (delivered.get(seq) ?? 0) + 1;
        delivered.set(seq, n);
        if (n === opts.subscribers) waiters.get(seq)?.();
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      streamErrors++;
      firstStreamError ??= err instanceof Error ? err.message : String(err);
    }
  };
  const streams = Array.from({ length: opts.subscribers }, (_, i) => subscribe(i));
  const readyTimer = setTimeout(
    () => readyReject(new Error(`only ${ready}/${opts.subscribers} subscribed in 30 s`)),
    30_000,
  );
  await allReadyPromise;
  clearTimeout(readyTimer);

  const sendRtts: number[] = [];
  let lost = 0;
  for (let seq = 0; seq < opts.messages; seq++) {
    const all = new Promise<void>((resolve) => waiters.set(seq, resolve));
    const started = performance.now();
    sendStart.set(seq, started);
    await sender.send(
      { room, clientMsgId: `bench-${room}-${seq}`, text: `bench:${seq}` },
      { headers, timeoutMs: 10_000 },
    );
    sendRtts.push(performance.now() - started);
    const timedOut = await Promise.race([all.then(() => false), sleep(5000).then(() => true)]);
    if (timedOut) lost += opts.subscribers - (delivered.get(seq) ?? 0);
    await sleep(opts.gapMs);
  }
  controller.abort();
  await Promise.allSettled(streams);
  closeAll();

  latencies.sort((a, b) => a - b);
  sendRtts.sort((a, b) => a - b);
  const expected = opts.subscribers * opts.messages;
  emit({
    type: "result",
    ok: latencies.length === expected && streamErrors === 0,
    available: true,
    subscribers: opts.subscribers,
    messages: opts.messages,
    delivered: latencies.length,
    expected,
    lost,
    streamErrors,
    firstStreamError,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1),
    sendRttP50Ms: percentile(sendRtts, 50),
  });
  process.exit(0);
} catch (err) {
  closeAll();
  fail(err);
}
