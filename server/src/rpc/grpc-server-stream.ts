import http2 from "node:http2";
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescService,
  type MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type StreamRequest,
  type StreamResponse,
} from "@connectrpc/connect";
import {
  type Compression,
  compressedFlag,
  compressionNegotiate,
  type EnvelopedMessage,
  envelopeDecompress,
  type Serialization,
} from "@connectrpc/connect/protocol";
import {
  contentTypeProto,
  grpcStatusOk,
  headerAcceptEncoding,
  headerContentType,
  headerEncoding,
  headerGrpcStatus,
  parseTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import { CallLifetime, header, toConnectError } from "./call.js";
import { gone } from "./exchange.js";
import { envelope, GRPC_ACCEPT_ENCODING, GRPC_ENCODING, GRPC_TIMEOUT } from "./grpc-unary.js";
import { FastHeaders } from "./headers.js";
import type { Serving as EngineServing } from "./serving.js";
import { ENVELOPE_PREFIX_BYTES as HEADER_PREFIX_BYTES } from "./unary-body.js";
import { errorFromResetCode, nodeHeaders } from "./upstream.js";

/**
 * The engine's gRPC server-streaming driver: binary
 * (`application/grpc[+proto]`) server-streaming calls over HTTP/2 served
 * straight from the raw `http2` stream.
 *
 * Why it exists: through connect's universal handler every stream goes through Fastify's
 * request/reply, Node's `(req, res)` compat layer, connect's universal
 * handler with about ten down-levelled async generators (input and output
 * pipelines, `untilFirst`, the invoke generator) and three AbortControllers.
 * That cost is paid per message (each one passes through every generator)
 * and per open stream (an idle WatchUsers held ~42 KB of heap). This module
 * does what connect's gRPC handler (`protocol-grpc/handler-factory.js` with
 * `transformInvokeImplementation`) does for one server-streaming call,
 * without a generator of its own:
 *
 *   headers → negotiate compression, parse grpc-timeout → THE interceptor
 *   chain gets a `StreamRequest` whose `message` yields the one request
 *   message (read, size-checked, decompressed and parsed only when pulled,
 *   as connect does) → the handler → its output iterated with plain
 *   `next()` calls: each message serialized, compressed when big enough,
 *   written as one envelope, waiting for 'drain' when the stream is full →
 *   trailers.
 *
 * Kept identical to connect (proven by test/grpc-server-stream-differential
 * against connect's handler on the same store), as a client sees it:
 * - the interceptor semantics: interceptors run before the request message
 *   is read, so an auth or rate-limit rejection wins over a bad body, a bad
 *   `grpc-encoding` or `grpc-timeout` (connect raises those when the input is
 *   first pulled); zero or two request messages are Unimplemented, raised
 *   inside the chain like connect's `ensureSingle`;
 * - response headers are committed with the first message (what the chain
 *   and the handler set until then), or with the trailers when no message is
 *   written; headers and trailers are always two HEADERS frames, as
 *   connect-node writes them through the compat layer (no trailers-only
 *   response);
 * - errors: `setTrailerStatus` (grpc-status, grpc-message,
 *   grpc-status-details-bin, the error's metadata) on the trailer; anything
 *   but a ConnectError is "internal error";
 * - read/write limits, compression (gzip, br; `compressMinBytes`),
 *   deadlines, client resets and shutdown as the handler context's signal.
 *
 * Like the unary fast paths, it hands the chain `FastHeaders` (headers.ts)
 * instead of undici's `Headers`: request metadata as a view of Node's
 * headers, response headers and trailers with the same observable behaviour.
 *
 * Different, on purpose:
 * - one AbortController per call (`CallLifetime`), aborted only when the
 *   call is really cancelled (client reset, deadline, shutdown) or fails;
 *   connect also aborts it when a stream ends normally;
 * - when the client goes away, the output iterator's `return()` is called
 *   (after a pending `next()` settles), so the handler's `finally` blocks
 *   run even if it ignores its signal; connect relies on the signal alone;
 * - a response header Node refuses (an invalid value set by an interceptor)
 *   resets the stream with INTERNAL_ERROR instead of leaving it hanging.
 *
 * A frozen output message (`Object.freeze`, as the chat hub shares one
 * `SubscribeResponse` per event between every subscriber of a room) is
 * serialized once and its envelope reused: a documented feature of the
 * engine, for fan-out.
 *
 * gRPC+JSON, gRPC-Web and Connect streams go to the universal driver.
 */

/** A served server-streaming method, ready to be called. */
export interface StreamRoute {
  readonly spec: MethodImplSpec & { kind: "server_streaming" };
  readonly method: DescMethodServerStreaming;
  readonly service: DescService;
  /** connect's binary serializers, limited to readMaxBytes / writeMaxBytes. */
  readonly input: Serialization<MessageShape<DescMessage>>;
  readonly output: Serialization<MessageShape<DescMessage>>;
}

/** What every call of this driver shares: the engine's serving options. */
type Serving = EngineServing;

type Message = MessageShape<DescMessage>;
type AnyFn = Parameters<Interceptor>[0];

const METHOD_KIND = "server-streaming";
const EMPTY = Buffer.alloc(0);

/** Serves one binary gRPC server-streaming call to `route`. */
export function serveGrpcServerStream(
  serving: Serving,
  route: StreamRoute,
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  url: string,
  values: ContextValues,
): void {
  void new ServerStreamCall(serving, route, stream, headers, url, values).run(headers);
}

/** Errors on the stream are reported through 'close' and its rstCode. */
const ignore = () => undefined;

/**
 * One server-streaming call, from the request headers to the trailers. The
 * call keeps only what it needs while the stream is open: no per-message
 * closure or object survives the message.
 */
class ServerStreamCall {
  readonly #serving: Serving;
  readonly #route: StreamRoute;
  readonly #stream: http2.ServerHttp2Stream;
  readonly #lifetime: CallLifetime;
  readonly #compression: Compression | null;
  readonly #input: RequestMessage;
  readonly #responseHeader: Headers;
  readonly #responseTrailer: Headers;
  /** The response headers were sent (with the first message, or with the trailers). */
  #responded = false;
  /** The answer is complete (trailers queued) or the call was abandoned. */
  #finished = false;
  /** The client went away before the answer was complete. */
  #gone = false;
  #trailers: Record<string, string | string[] | number> | undefined;
  /** Resumes the writer waiting for 'drain' (or for the stream to close). */
  #wakeWriter: (() => void) | undefined;
  readonly #url: string;
  readonly #values: ContextValues;

  constructor(
    serving: Serving,
    route: StreamRoute,
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    url: string,
    values: ContextValues,
  ) {
    this.#serving = serving;
    this.#route = route;
    this.#stream = stream;
    this.#url = url;
    this.#values = values;
    const timeout = parseTimeout(header(headers, GRPC_TIMEOUT), serving.maxTimeoutMs);
    const compression = compressionNegotiate(
      serving.acceptCompression,
      header(headers, GRPC_ENCODING),
      header(headers, GRPC_ACCEPT_ENCODING),
      headerAcceptEncoding,
    );
    this.#compression = compression.response;
    this.#responseHeader = new FastHeaders({ [headerContentType]: contentTypeProto });
    if (compression.response) this.#responseHeader.set(headerEncoding, compression.response.name);
    this.#responseTrailer = new FastHeaders({ [headerGrpcStatus]: grpcStatusOk });
    // The call's one AbortController: client reset, deadline, shutdown.
    this.#lifetime = new CallLifetime(
      serving.shutdownSignal,
      timeout.error === undefined ? timeout.timeoutMs : undefined,
    );
    // As in connect, a bad grpc-encoding or grpc-timeout surfaces when the
    // request message is first pulled, inside the interceptor chain.
    this.#input = new RequestMessage(
      stream,
      serving.readMaxBytes,
      compression.request,
      route.input,
      compression.error ?? timeout.error,
    );
    stream.on("error", ignore);
    stream.once("close", this.#onClose);
  }

  /** Serves the call to its end; never rejects. */
  async run(headers: http2.IncomingHttpHeaders): Promise<void> {
    try {
      await this.#serve(headers);
    } catch {
      // Only a broken invariant gets here (e.g. an interceptor that
      // returned no iterable): the exchange is reset rather than left open.
      this.#abort();
    }
  }

  async #serve(headers: http2.IncomingHttpHeaders): Promise<void> {
    let res: StreamResponse;
    try {
      res = await this.#open(headers);
    } catch (error) {
      return this.#finish(error);
    }
    copyHeaders(res.header, this.#responseHeader);
    const it = res.message[Symbol.asyncIterator]();
    for (;;) {
      let result: IteratorResult<Message>;
      try {
        result = await it.next();
      } catch (error) {
        return this.#finish(error);
      }
      if (result.done === true) break;
      if (this.#gone) return this.#stop(it);
      let chunk: Buffer;
      try {
        const encoded = this.#encode(result.value);
        chunk = encoded instanceof Buffer ? encoded : await encoded;
      } catch (error) {
        // As connect's serializing pipeline: the handler is stopped first.
        await returnQuietly(it);
        return this.#finish(error);
      }
      if (this.#gone) return this.#stop(it);
      if (!this.#write(chunk)) {
        if (this.#gone || this.#finished) return this.#stop(it);
        await this.#drained();
        if (this.#gone) return this.#stop(it);
      }
    }
    copyHeaders(res.trailer, this.#responseTrailer);
    this.#finish(undefined);
  }

  /**
   * Runs the interceptor chain down to the handler: resolves with the
   * response the chain returns (its messages not pulled yet). A method of
   * its own so that nothing it builds stays referenced by the frame that
   * pumps the stream for its whole life.
   */
  #open(headers: http2.IncomingHttpHeaders): Promise<StreamResponse> {
    const route = this.#route;
    const url = this.#url;
    const request: StreamRequest = {
      stream: true,
      message: this.#input,
      method: route.method,
      requestMethod: "POST",
      url,
      signal: this.#lifetime.signal,
      header: FastHeaders.fromNode(headers),
      service: route.service,
      contextValues: this.#values,
    };
    let next = this.#invokeHandler(url);
    const interceptors = this.#serving.interceptors;
    // applyInterceptors: the first interceptor is the outermost.
    for (let i = interceptors.length - 1; i >= 0; i--) {
      next = (interceptors[i] as Interceptor)(next);
    }
    return next(request) as Promise<StreamResponse>;
  }

  /**
   * The innermost function of the chain, as connect's
   * `transformInvokeImplementation` builds it for a server-streaming
   * method: exactly one request message, then the handler's output with
   * every message normalized to its schema.
   */
  #invokeHandler(url: string): AnyFn {
    const route = this.#route;
    const lifetime = this.#lifetime;
    const responseHeader = this.#responseHeader;
    const responseTrailer = this.#responseTrailer;
    return async (req) => {
      const message = await ensureSingle((req as StreamRequest).message);
      const context: HandlerContext = {
        method: route.method,
        service: req.service,
        requestMethod: "POST",
        protocolName: "grpc",
        url,
        signal: req.signal,
        timeoutMs: lifetime.timeoutMs,
        requestHeader: req.header,
        responseHeader,
        responseTrailer,
        values: req.contextValues,
      };
      const output = route.spec.impl(message, context);
      return {
        stream: true,
        message: new NormalizedOutput(route.method.output, output),
        method: route.method,
        service: route.service,
        header: responseHeader,
        trailer: responseTrailer,
      };
    };
  }

  /** One message as one envelope: serialized (writeMaxBytes), compressed when big enough. */
  #encode(message: Message): Buffer | Promise<Buffer> {
    const shared = Object.isFrozen(message)
      ? frozenMessage(message, this.#route.output)
      : undefined;
    const data = shared?.data ?? this.#route.output.serialize(message);
    const compression = this.#compression;
    if (compression === null || data.byteLength < this.#serving.compressMinBytes) {
      if (shared === undefined) return envelope(0, data);
      shared.plain ??= envelope(0, data);
      return shared.plain;
    }
    return compression.compress(data).then((compressed) => envelope(compressedFlag, compressed));
  }

  /** Writes one envelope (the headers first, once); false when the caller must wait for 'drain'. */
  #write(chunk: Buffer): boolean {
    const stream = this.#stream;
    if (!this.#responded && !this.#respond()) return false;
    return stream.write(chunk);
  }

  /** Sends the response headers; false (and the stream reset) if Node refuses them. */
  #respond(): boolean {
    this.#responded = true;
    const stream = this.#stream;
    try {
      stream.respond(nodeHeaders(this.#responseHeader, { ":status": 200 }), {
        waitForTrailers: true,
      });
    } catch {
      this.#abort();
      return false;
    }
    stream.once("wantTrailers", this.#sendTrailers);
    return true;
  }

  /** Resolves on 'drain', or at once when the stream closes. */
  #drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#wakeWriter = resolve;
      this.#stream.once("drain", this.#onDrain);
    });
  }

  readonly #onDrain = () => {
    const wake = this.#wakeWriter;
    this.#wakeWriter = undefined;
    wake?.();
  };

  readonly #sendTrailers = () => {
    try {
      this.#stream.sendTrailers(this.#trailers ?? {});
    } catch {
      // The stream was destroyed meanwhile; nobody is left to tell.
    }
  };

  /**
   * Ends the answer: the error (if any) goes into the trailer, as connect's
   * `transformCatchFinally` puts it there; then the headers (unless the
   * first message took them) and the trailers.
   */
  #finish(error: unknown): void {
    if (this.#finished) return;
    this.#finished = true;
    if (error !== undefined) {
      const connectError = toConnectError(error);
      this.#lifetime.abandon(() => connectError);
      setTrailerStatus(this.#responseTrailer, connectError);
    } else {
      this.#lifetime.settle();
    }
    this.#input.release();
    const stream = this.#stream;
    if (this.#gone || stream.destroyed || stream.closed) return;
    if (!this.#responded && !this.#respond()) return;
    try {
      this.#trailers = nodeHeaders(this.#responseTrailer);
    } catch {
      this.#abort();
      return;
    }
    stream.end();
    // What is left of the request is read and dropped, so the stream can
    // close once the client has ended its side.
    stream.resume();
  }

  /** The client went away: stop the handler (its `finally` blocks run). */
  async #stop(it: AsyncIterator<Message>): Promise<void> {
    this.#finished = true;
    this.#input.release();
    await returnQuietly(it);
  }

  /** Resets the stream (the 'close' that follows abandons the call); no more writes. */
  #abort(): void {
    this.#finished = true;
    if (!this.#stream.destroyed) this.#stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }

  readonly #onClose = () => {
    // A complete answer (trailers queued) closes the stream normally.
    if (this.#trailers === undefined) {
      this.#gone = true;
      const stream = this.#stream;
      this.#lifetime.abandon(() => errorFromResetCode(stream.rstCode) ?? gone());
      this.#input.close(this.#lifetime.signal.reason);
    }
    this.#onDrain();
  };
}

/** connect's `ensureSingle`: the one request message of a server-streaming call. */
async function ensureSingle(messages: AsyncIterable<Message>): Promise<Message> {
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) {
    throw new ConnectError(
      `protocol error: missing input message for ${METHOD_KIND} method`,
      Code.Unimplemented,
    );
  }
  const second = await it.next();
  if (second.done !== true) {
    throw new ConnectError(
      `protocol error: received extra input message for ${METHOD_KIND} method`,
      Code.Unimplemented,
    );
  }
  return first.value;
}

async function returnQuietly(it: AsyncIterator<Message>): Promise<void> {
  try {
    await it.return?.();
  } catch {
    // The call is over either way.
  }
}

/** connect's `copyHeaders`: `to` becomes a copy of `from` (nothing if they are one object). */
function copyHeaders(from: Headers, to: Headers): void {
  if (from === to) return;
  to.forEach((_, key) => {
    to.delete(key);
  });
  from.forEach((value, key) => {
    to.set(key, value);
  });
}

/**
 * connect's `normalizeIterable` as one object: the handler's output with
 * each message made a full message of `desc` (`create` returns a message
 * of the right type unchanged).
 */
class NormalizedOutput implements AsyncIterable<Message>, AsyncIterator<Message> {
  readonly #desc: DescMessage;
  readonly #source: AsyncIterable<unknown>;
  #it: AsyncIterator<unknown> | undefined;

  constructor(desc: DescMessage, source: AsyncIterable<unknown>) {
    this.#desc = desc;
    this.#source = source;
  }

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    this.#it = this.#source[Symbol.asyncIterator]();
    return this;
  }

  readonly #normalize = (result: IteratorResult<unknown>): IteratorResult<Message> =>
    result.done === true
      ? (result as IteratorResult<Message>)
      : { done: false, value: create(this.#desc, result.value as Message) };

  next(): Promise<IteratorResult<Message>> {
    return this.#iterator().next().then(this.#normalize);
  }

  return(value?: unknown): Promise<IteratorResult<Message>> {
    const it = this.#iterator();
    if (it.return === undefined) return Promise.resolve({ done: true, value: undefined });
    return it.return(value).then(this.#normalize);
  }

  throw(error?: unknown): Promise<IteratorResult<Message>> {
    const it = this.#iterator();
    if (it.throw === undefined) return Promise.reject(error);
    return it.throw(error).then(this.#normalize);
  }

  #iterator(): AsyncIterator<unknown> {
    this.#it ??= this.#source[Symbol.asyncIterator]();
    return this.#it;
  }
}

interface Pending {
  readonly resolve: (result: IteratorResult<Message>) => void;
  readonly reject: (error: unknown) => void;
}

/**
 * The request's messages as the interceptor chain and `ensureSingle` pull
 * them. Reading starts with the first `next()` (not before: connect's
 * handler reads nothing until the chain asks), and follows connect's
 * input pipeline exactly: a bad grpc-encoding or grpc-timeout first; then
 * envelopes split per received chunk (each checked against readMaxBytes as
 * soon as its 5-byte prefix is in; a chunk whose split fails yields
 * nothing), decompressed and parsed one per `next()`; at the end, bytes
 * after the last complete prefix are an incomplete envelope. Nothing past a
 * second envelope is read: `ensureSingle` fails on it.
 */
class RequestMessage implements AsyncIterable<Message>, AsyncIterator<Message> {
  readonly #stream: http2.ServerHttp2Stream;
  readonly #readMaxBytes: number;
  readonly #compression: Compression | null;
  readonly #serialization: Serialization<Message>;
  #error: unknown;
  #reading = false;
  /** No more reading (failed, ended, enough envelopes, or released). */
  #stopped = false;
  /** The request ended, or the call no longer needs it (released). */
  #ended = false;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** The prefix of the envelope being received (flags, length), once its 5 bytes are in. */
  #flags = -1;
  #length = 0;
  #envelopes: EnvelopedMessage[] = [];
  #pending: Pending | undefined;

  constructor(
    stream: http2.ServerHttp2Stream,
    readMaxBytes: number,
    compression: Compression | null,
    serialization: Serialization<Message>,
    headerError: ConnectError | undefined,
  ) {
    this.#stream = stream;
    this.#readMaxBytes = readMaxBytes;
    this.#compression = compression;
    this.#serialization = serialization;
    this.#error = headerError;
  }

  [Symbol.asyncIterator](): AsyncIterator<Message> {
    return this;
  }

  next(): Promise<IteratorResult<Message>> {
    if (!this.#reading && this.#error === undefined && !this.#stopped && !this.#ended) {
      this.#reading = true;
      // An empty request may have ended already ('end' is emitted without a
      // reader when no data came).
      if (this.#stream.readableEnded) this.#onEnd();
      else {
        this.#stream.on("data", this.#onData);
        this.#stream.once("end", this.#onEnd);
      }
    }
    return new Promise<IteratorResult<Message>>((resolve, reject) => {
      this.#pending = { resolve, reject };
      this.#settle();
    });
  }

  return(): Promise<IteratorResult<Message>> {
    this.release();
    return Promise.resolve({ done: true, value: undefined });
  }

  /** Stops reading and drops what was buffered (the call no longer needs the request). */
  release(): void {
    this.#stopReading();
    this.#chunks = [];
    this.#buffered = 0;
    this.#envelopes = [];
    this.#ended = true;
    this.#settle();
  }

  /** The stream closed (client reset): a pending or later `next()` rejects with `reason`. */
  close(reason: unknown): void {
    this.#error ??= reason;
    this.release();
  }

  #stopReading(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    if (!this.#reading) return;
    this.#stream.off("data", this.#onData);
    this.#stream.off("end", this.#onEnd);
    // Flow control holds the client back until the answer is complete
    // (then the rest is read and dropped; see ServerStreamCall#finish).
    if (!this.#stream.readableEnded) this.#stream.pause();
  }

  readonly #onData = (chunk: Buffer) => {
    this.#chunks.push(chunk);
    this.#buffered += chunk.byteLength;
    const split: EnvelopedMessage[] = [];
    for (;;) {
      if (this.#flags < 0) {
        if (this.#buffered < HEADER_PREFIX_BYTES) break;
        const prefix = this.#take(HEADER_PREFIX_BYTES);
        this.#flags = prefix[0] as number;
        this.#length = prefix.readUInt32BE(1);
        if (this.#length > this.#readMaxBytes) {
          // connect's decoder throws from the chunk: what it split is lost.
          this.#error = new ConnectError(
            `message size ${this.#length} is larger than configured readMaxBytes ${this.#readMaxBytes}`,
            Code.ResourceExhausted,
          );
          this.#stopReading();
          this.#settle();
          return;
        }
      }
      if (this.#buffered < this.#length) break;
      split.push({ flags: this.#flags, data: this.#take(this.#length) });
      this.#flags = -1;
    }
    for (const env of split) this.#envelopes.push(env);
    // A second message fails the call; nothing after it matters.
    if (this.#envelopes.length >= 2) this.#stopReading();
    this.#settle();
  };

  readonly #onEnd = () => {
    this.#ended = true;
    this.#stopReading();
    this.#settle();
  };

  /** Takes `n` buffered bytes (n ≤ #buffered). */
  #take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.#chunks[0] as Buffer;
    if (first.byteLength >= n) {
      const out = first.subarray(0, n);
      if (first.byteLength === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return out;
    }
    const all = Buffer.concat(this.#chunks, this.#buffered);
    const out = all.subarray(0, n);
    this.#chunks = all.byteLength > n ? [all.subarray(n)] : [];
    this.#buffered -= n;
    return out;
  }

  /** Answers a pending `next()` if what it waits for is known. */
  #settle(): void {
    const pending = this.#pending;
    if (pending === undefined) return;
    const env = this.#envelopes.shift();
    if (env !== undefined) {
      this.#pending = undefined;
      this.#parse(env).then(pending.resolve, pending.reject);
      return;
    }
    if (this.#error !== undefined) {
      this.#pending = undefined;
      pending.reject(this.#error);
      return;
    }
    if (this.#ended) {
      this.#pending = undefined;
      // The prefix of an envelope whose data never came is not counted, as
      // in connect's decoder: only bytes after it are.
      if (this.#buffered > 0) {
        pending.reject(
          new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument),
        );
      } else {
        pending.resolve({ done: true, value: undefined });
      }
    }
  }

  async #parse(env: EnvelopedMessage): Promise<IteratorResult<Message>> {
    const { data } = await envelopeDecompress(env, this.#compression, this.#readMaxBytes);
    return { done: false, value: this.#serialization.parse(data) };
  }
}

/**
 * What is kept of a frozen output message. A handler that yields a frozen
 * message declares it immutable (frozen all the way down: chat-service's
 * room events are, being shared by every subscriber of a room), so when the
 * same object goes to many streams — chat fan-out to every subscriber — it
 * is serialized once, and its uncompressed envelope built once and written
 * to each of them. Kept as long as the message object lives.
 */
interface FrozenMessage {
  readonly data: Uint8Array;
  plain?: Buffer;
}

const frozenMessages = new WeakMap<Message, FrozenMessage>();

function frozenMessage(message: Message, output: Serialization<Message>): FrozenMessage {
  let kept = frozenMessages.get(message);
  if (kept === undefined) {
    kept = { data: output.serialize(message) };
    frozenMessages.set(message, kept);
  }
  return kept;
}
