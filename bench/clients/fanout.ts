import http2 from "node:http2";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  ChatService,
  SubscribeRequestSchema,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../../gen/switchboard/chat/v1/chat_pb.js";
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
 * Subscribers (`subscriberClient`):
 * - "h2" (default): plain node:http2 gRPC calls; a message's receive time is
 *   taken when its bytes arrive, before it is decoded (every message is then
 *   decoded and checked). This measures the server's delivery: one process
 *   on one core receiving 1,000 streams through a full client stack spends
 *   more CPU per message than the server does, and its own queue would be
 *   what the latency measures.
 * - "connect": connect-node's gRPC transport, as an application would
 *   subscribe (its receive time includes that client's decoding pipeline).
 *
 * If the server does not serve ChatService (a probe Send fails with
 * UNIMPLEMENTED), prints {"type":"result","available":false,…} instead.
 */
interface Options {
  readonly url: string;
  readonly token: string;
  readonly subscribers: number;
  readonly messages: number;
  /**
   * Messages sent and delivered first, not measured (as every other scenario
   * warms up): the first deliveries to a new room run on a cold JIT.
   */
  readonly warmupMessages?: number;
  readonly gapMs: number;
  readonly subscriberClient?: "h2" | "connect";
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
  /** The slowest delivery of each message (ms), by sequence number. */
  const slowest: number[] = [];
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

  const onFirst = () => {
    if (++ready === opts.subscribers) readyResolve();
  };
  /** One event a subscriber received at `receivedAt`. */
  const onEvent = (res: SubscribeResponse, receivedAt: number) => {
    const kind = res.event?.kind;
    if (kind?.case !== "message" || !kind.value.text.startsWith("bench:")) return;
    const seq = Number(kind.value.text.slice("bench:".length));
    const started = sendStart.get(seq);
    if (started === undefined) return;
    if (seq >= (opts.warmupMessages ?? 0)) {
      latencies.push(receivedAt - started);
      const i = seq - (opts.warmupMessages ?? 0);
      slowest[i] = Math.max(slowest[i] ?? 0, receivedAt - started);
    }
    const n = (delivered.get(seq) ?? 0) + 1;
    delivered.set(seq, n);
    if (n === opts.subscribers) waiters.get(seq)?.();
  };
  const streamFailed = (message: string) => {
    streamErrors++;
    firstStreamError ??= message;
  };

  const subscribeConnect = async (i: number) => {
    let first = true;
    try {
      for await (const res of clientOn(i).subscribe(
        { room },
        { headers, signal: controller.signal },
      )) {
        if (first) {
          first = false;
          onFirst();
        }
        onEvent(res, performance.now());
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      streamFailed(err instanceof Error ? err.message : String(err));
    }
  };

  const h2Sessions = Array.from({ length: connections }, () => http2.connect(opts.url));
  const h2Requests: http2.ClientHttp2Stream[] = [];
  const subscribeBody = envelope(
    toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { room })),
  );
  const subscribeH2 = (i: number) =>
    new Promise<void>((resolve) => {
      const req = h2Sessions[i % connections]!.request({
        ":method": "POST",
        ":path": "/switchboard.chat.v1.ChatService/Subscribe",
        "content-type": "application/grpc",
        te: "trailers",
        ...headers,
      });
      h2Requests.push(req);
      let buffered: Buffer = Buffer.alloc(0);
      let first = true;
      let status = "none";
      req.on("response", (h) => {
        if (h["grpc-status"] !== undefined) status = `${h["grpc-status"]} ${h["grpc-message"]}`;
      });
      req.on("trailers", (t) => {
        status = `${t["grpc-status"]} ${t["grpc-message"] ?? ""}`;
      });
      req.on("data", (chunk: Buffer) => {
        // The receive time is taken before anything is decoded.
        const receivedAt = performance.now();
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
        while (buffered.length >= 5) {
          const length = buffered.readUInt32BE(1);
          if (buffered.length < 5 + length) break;
          if (buffered[0] !== 0) {
            streamFailed(`unexpected envelope flags ${buffered[0]}`);
            req.close(http2.constants.NGHTTP2_CANCEL);
            return;
          }
          const res = fromBinary(SubscribeResponseSchema, buffered.subarray(5, 5 + length));
          buffered = buffered.subarray(5 + length);
          if (first) {
            first = false;
            onFirst();
          }
          onEvent(res, receivedAt);
        }
      });
      req.on("error", () => undefined); // reported on close
      req.on("close", () => {
        if (!controller.signal.aborted) streamFailed(`stream ended: grpc-status ${status}`);
        resolve();
      });
      req.end(subscribeBody);
    });
  const subscribe = opts.subscriberClient === "connect" ? subscribeConnect : subscribeH2;
  const streams = Array.from({ length: opts.subscribers }, (_, i) => subscribe(i));
  const readyTimer = setTimeout(
    () => readyReject(new Error(`only ${ready}/${opts.subscribers} subscribed in 30 s`)),
    30_000,
  );
  await allReadyPromise;
  clearTimeout(readyTimer);

  const sendRtts: number[] = [];
  let lost = 0;
  // Sequence numbers below `warmup` are the warm-up messages.
  const warmup = opts.warmupMessages ?? 0;
  for (let seq = 0; seq < warmup + opts.messages; seq++) {
    const all = new Promise<void>((resolve) => waiters.set(seq, resolve));
    const started = performance.now();
    sendStart.set(seq, started);
    await sender.send(
      { room, clientMsgId: `bench-${room}-${seq}`, text: `bench:${seq}` },
      { headers, timeoutMs: 10_000 },
    );
    if (seq >= warmup) sendRtts.push(performance.now() - started);
    const timedOut = await Promise.race([all.then(() => false), sleep(5000).then(() => true)]);
    if (timedOut && seq >= warmup) lost += opts.subscribers - (delivered.get(seq) ?? 0);
    await sleep(opts.gapMs);
  }
  controller.abort();
  for (const req of h2Requests) req.close(http2.constants.NGHTTP2_CANCEL);
  await Promise.allSettled(streams);
  closeAll();
  for (const session of h2Sessions) session.close();

  latencies.sort((a, b) => a - b);
  sendRtts.sort((a, b) => a - b);
  const expected = opts.subscribers * opts.messages;
  emit({
    type: "result",
    ok: latencies.length === expected && streamErrors === 0,
    available: true,
    subscribers: opts.subscribers,
    messages: opts.messages,
    warmupMessages: warmup,
    delivered: latencies.length,
    expected,
    lost,
    streamErrors,
    firstStreamError,
    subscriberClient: opts.subscriberClient ?? "h2",
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.at(-1),
    sendRttP50Ms: percentile(sendRtts, 50),
    slowestPerMessageMs: slowest.map((ms) => Math.round(ms * 10) / 10),
  });
  process.exit(0);
} catch (err) {
  closeAll();
  fail(err);
}

/** One gRPC envelope (uncompressed). */
function envelope(data: Uint8Array): Buffer {
  const out = Buffer.alloc(5 + data.byteLength);
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}
