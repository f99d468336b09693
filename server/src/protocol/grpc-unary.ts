import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  compressedFlag,
  compressionNegotiate,
  type EnvelopedMessage,
  envelopeDecompress,
} from "@connectrpc/connect/protocol";
import {
  contentTypeProto,
  grpcStatusOk,
  headerAcceptEncoding,
  headerContentType,
  headerEncoding,
  headerGrpcStatus,
  parseContentType,
  parseTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import {
  CONTENT_TYPE,
  envelope,
  GRPC_ACCEPT_ENCODING,
  GRPC_ENCODING,
  GRPC_TIMEOUT,
  HEADER_PREFIX_BYTES,
} from "./grpc-envelope.js";
import { FastHeaders } from "./headers.js";
import type { StreamHandler } from "./listener.js";
import {
  CallLifetime,
  errorFromResetCode,
  handlerContext,
  header,
  invokeUnary,
  nodeHeaders,
  peerOf,
  requestHeaders,
  requestUrl,
  toConnectError,
  type UnaryFastPathOptions,
  type UnaryRoute,
  unaryServing,
} from "./unary-common.js";

/**
 * Switchboard's gRPC unary fast path: binary (`application/grpc[+proto]`)
 * unary calls over HTTP/2 served straight from the raw `http2` stream.
 *
 * Why it exists: connect-node 2.1.2 spends ~0.4 ms of CPU on every unary
 * call before any interceptor or handler runs — the `(req, res)` compat
 * layer, Fastify routing, three AbortControllers (two of them aborted, so
 * two DOMExceptions) per call, ~12 downlevelled async generators and three
 * `new Headers`. grpc-js does the same work in a tenth of that. This module
 * does what connect's gRPC handler does for one unary call, with plain
 * callbacks:
 *
 *   headers → negotiate compression, parse grpc-timeout → read the body
 *   (envelope limits as it arrives) → decompress, parse → connect's own
 *   `invokeUnaryImplementation` with THE interceptor chain → one envelope,
 *   headers, trailers.
 *
 * What it keeps identical to connect (proven by test/grpc-unary-differential
 * against connect's handler on the same store): status codes and messages,
 * `grpc-status-details-bin`, error metadata, response headers and trailers,
 * compression negotiation (gzip, br; `grpc-accept-encoding` on unknown
 * encodings), read/write limits, deadlines and cancellation as the handler
 * context's signal, and the interceptor semantics (connect's
 * `invokeUnaryImplementation` and `applyInterceptors` run the chain).
 *
 * What it does differently, on purpose: one AbortController per call,
 * aborted only when the call is really cancelled (client reset, deadline,
 * shutdown) — connect aborts every call's signals when it ends, which costs
 * a DOMException each.
 *
 * The route table, the call's lifetime (signal, deadline, shutdown), the
 * handler context and the header conversions are shared with the Connect
 * fast path: see unary-common.ts.
 *
 * Everything else — gRPC+JSON, streaming methods, gRPC-Web, Connect, HTTP/1.1,
 * unknown paths — returns `false` and goes to connect's handlers unchanged.
 */

/**
 * Builds the fast path for the unary methods of `options.services`: takes
 * an incoming HTTP/2 stream if it is a binary gRPC unary call to a served
 * method (returns true and answers it), or leaves it (false).
 */
export function grpcUnaryFastPath(options: UnaryFastPathOptions): StreamHandler {
  const { limits, compressMinBytes, acceptCompression, interceptors, routes } =
    unaryServing(options);

  return (stream, headers) => {
    const path = headers[":path"];
    if (path === undefined || headers[":method"] !== "POST") return false;
    const route = routes.get(path);
    if (route === undefined) return false;
    const type = parseContentType(header(headers, CONTENT_TYPE));
    if (type === undefined || !type.binary) return false;
    serve(stream, headers, route);
    return true;
  };

  function serve(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    route: UnaryRoute,
  ): void {
    const timeout = parseTimeout(header(headers, GRPC_TIMEOUT), Number.MAX_SAFE_INTEGER);
    const compression = compressionNegotiate(
      acceptCompression,
      header(headers, GRPC_ENCODING),
      header(headers, GRPC_ACCEPT_ENCODING),
      headerAcceptEncoding,
    );
    const responseHeader = new FastHeaders({ [headerContentType]: contentTypeProto });
    if (compression.response) responseHeader.set(headerEncoding, compression.response.name);
    const responseTrailer = new FastHeaders({ [headerGrpcStatus]: grpcStatusOk.toString() });
    const input = route.serialization.getI(true);
    const output = route.serialization.getO(true);

    // The call's one AbortController: client reset, deadline, shutdown.
    const call = new CallLifetime(
      options.shutdownSignal,
      timeout.error === undefined ? timeout.timeoutMs : undefined,
    );
    stream.on("error", () => undefined); // reported through 'close' / rstCode
    stream.once("close", () => call.abandon(() => errorFromResetCode(stream.rstCode)));

    const respond = (message: Uint8Array | undefined) => {
      call.settle();
      if (stream.destroyed || stream.closed) return;
      const trailers = nodeHeaders(responseTrailer);
      stream.respond(nodeHeaders(responseHeader, { ":status": 200 }), { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers(trailers));
      if (message === undefined) stream.end();
      else stream.end(message);
    };
    const fail = (error: unknown) => {
      setTrailerStatus(responseTrailer, toConnectError(error));
      respond(undefined);
    };

    // Protocol errors in the headers win over anything in the body.
    const headerError = compression.error ?? timeout.error;
    if (headerError) {
      stream.resume();
      fail(headerError);
      return;
    }

    const authority = headers[":authority"] ?? "";
    const context = handlerContext(route, call, {
      protocolName: "grpc",
      url: requestUrl(stream.session?.encrypted === true, authority, headers[":path"] ?? ""),
      requestHeader: requestHeaders(headers),
      responseHeader,
      responseTrailer,
      values: options.contextValues(
        peerOf(stream.session?.socket?.remoteAddress, headers["user-agent"]),
      ),
    });

    const invoke = async (first: EnvelopedMessage) => {
      const message = input.parse(
        (await envelopeDecompress(first, compression.request, limits.readMaxBytes)).data,
      );
      let data = output.serialize(await invokeUnary(route, context, message, interceptors));
      let flags = 0;
      if (compression.response && data.byteLength >= compressMinBytes) {
        data = await compression.response.compress(data);
        flags = compressedFlag;
      }
      return envelope(flags, data);
    };

    readUnaryBody(stream, limits.readMaxBytes, (error, first, second) => {
      if (call.done) return; // the client went away while the body arrived
      if (error !== undefined && first === undefined) return fail(error);
      if (first === undefined) {
        return fail(
          new ConnectError(
            "protocol error: missing input message for unary method",
            Code.Unimplemented,
          ),
        );
      }
      // As in connect: the first message is decompressed and parsed before
      // the stream's trailing problems (a second message, an incomplete
      // envelope) are reported.
      if (error !== undefined || second !== undefined) {
        envelopeDecompress(first, compression.request, limits.readMaxBytes)
          .then(({ data }) => {
            input.parse(data);
            if (second) return envelopeDecompress(second, compression.request, limits.readMaxBytes);
          })
          .then((env) => {
            if (env) input.parse(env.data);
            throw (
              error ??
              new ConnectError(
                "protocol error: received extra input message for unary method",
                Code.Unimplemented,
              )
            );
          })
          .catch(fail)
          .catch(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
        return;
      }
      // Node refusing a header (e.g. an interceptor set an invalid value)
      // throws from `respond`: the exchange is reset rather than left hanging.
      invoke(first)
        .then(respond, fail)
        .catch(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR));
    });
  }
}

/**
 * Reads a unary request body: at most two envelopes (a second is an error
 * once it is complete), each checked against `readMaxBytes` as soon as its
 * 5-byte prefix arrives. Calls `done` once: with the first envelope (and the
 * second, if one came), or with a protocol error (and the first envelope,
 * when the error came after it).
 */
function readUnaryBody(
  stream: http2.ServerHttp2Stream,
  readMaxBytes: number,
  done: (
    error: ConnectError | undefined,
    first?: EnvelopedMessage,
    second?: EnvelopedMessage,
  ) => void,
): void {
  const chunks: Buffer[] = [];
  let buffered = 0;
  let first: EnvelopedMessage | undefined;
  let finished = false;
  const finish = (error: ConnectError | undefined, second?: EnvelopedMessage) => {
    if (finished) return;
    finished = true;
    stream.off("data", onData);
    stream.off("end", onEnd);
    // The rest of a body still arriving (after an early error) is left
    // unread: flow control stops the client until it sees the trailers.
    if (!stream.readableEnded) stream.pause();
    done(error, first, second);
  };
  /** Takes complete envelopes off the buffer; returns false once finished. */
  const drain = (): boolean => {
    while (buffered >= HEADER_PREFIX_BYTES) {
      const head = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, buffered);
      const length = head.readUInt32BE(1);
      if (length > readMaxBytes) {
        finish(
          new ConnectError(
            `message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`,
            Code.ResourceExhausted,
          ),
        );
        return false;
      }
      if (buffered < HEADER_PREFIX_BYTES + length) return true;
      const env: EnvelopedMessage = {
        flags: head[0] as number,
        data: head.subarray(HEADER_PREFIX_BYTES, HEADER_PREFIX_BYTES + length),
      };
      const rest = head.subarray(HEADER_PREFIX_BYTES + length);
      chunks.length = 0;
      buffered = rest.byteLength;
      if (buffered > 0) chunks.push(rest);
      if (first !== undefined) {
        finish(undefined, env);
        return false;
      }
      first = env;
    }
    return true;
  };
  const onData = (chunk: Buffer) => {
    chunks.push(chunk);
    buffered += chunk.byteLength;
    drain();
  };
  const onEnd = () => {
    finish(
      buffered > 0
        ? new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument)
        : undefined,
    );
  };
  stream.on("data", onData);
  stream.on("end", onEnd);
}
