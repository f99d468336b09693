import type http from "node:http";
import http2 from "node:http2";
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import { compressionNegotiate } from "@connectrpc/connect/protocol";
import {
  codeToHttpStatus,
  contentTypeUnaryJson,
  contentTypeUnaryProto,
  errorToJsonBytes,
  headerContentType,
  headerTimeout,
  headerUnaryAcceptEncoding,
  headerUnaryContentLength,
  headerUnaryEncoding,
  parseContentType,
  parseTimeout,
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
import type { Peer } from "../context.js";
import { FastHeaders } from "./headers.js";
import type { Http1Handler, StreamHandler } from "./listener.js";
import {
  CallLifetime,
  errorFromResetCode,
  handlerContext,
  header,
  invokeUnary,
  type NodeIncomingHeaders,
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
 * Switchboard's Connect unary fast path: Connect-protocol unary POSTs
 * (`application/proto`, `application/json` with or without
 * `; charset=utf-8`) over HTTP/1.1 and HTTP/2 (h2c and TLS), served from
 * Node's `(req, res)` pair (HTTP/1.1) or the raw `http2` stream (HTTP/2).
 *
 * Why it exists: the same as the gRPC fast path (grpc-unary.ts). connect-
 * node's generic handler costs ~0.4 ms of CPU per unary call before any
 * interceptor runs (compat layer, Fastify routing, three AbortControllers
 * and two DOMExceptions, ~12 downlevelled async generators, three
 * `new Headers`) — and the web app and the CLI speak Connect unary. This
 * module does what connect 2.1.2's Connect handler
 * (`protocol-connect/handler-factory.js`, `createUnaryHandler`) does for one
 * unary POST, with plain callbacks:
 *
 *   headers → parse connect-timeout-ms, negotiate content-encoding /
 *   accept-encoding → read the body (content-length checked against
 *   readMaxBytes before a byte is read; without one, the running total) →
 *   decompress, parse (binary or JSON; unknown JSON fields ignored, as
 *   connect does) → connect's own `invokeUnaryImplementation` with THE
 *   interceptor chain → serialize → one response: status, headers (trailers
 *   as `trailer-*` headers, `trailerMux`), content-length, body (compressed
 *   at or above `compressMinBytes`).
 *
 * What it keeps identical to connect (proven by
 * test/connect-unary-differential against connect's handler on the same
 * store, over HTTP/1.1 and HTTP/2, both codecs): HTTP statuses
 * (`codeToHttpStatus`), the error body (`errorToJsonBytes`: code, message,
 * details), error metadata as response headers, response headers in
 * connect's order, `trailer-*` headers, content-length, compression
 * negotiation (gzip, br; `accept-encoding` listing them on an unknown
 * `content-encoding`), read/write limits and their messages, JSON and
 * binary parse errors, header errors (encoding, timeout) winning over the
 * body, deadlines and cancellation as the handler context's signal, the
 * peer the context values see, and the interceptor semantics.
 *
 * What it does differently, on purpose: one AbortController per call,
 * aborted only when the call is really cancelled (client gone, deadline,
 * shutdown) — connect aborts every call's signals when it ends; an HTTP/1.1
 * client that goes away aborts the signal with Canceled "the client went
 * away" (connect-node: a bare AbortError, which is Canceled too). Where
 * connect-node logs an error and leaves the call hanging — response
 * compression failing, Node refusing a response header — the answer goes
 * out uncompressed, or the exchange is reset. Once shutdown begins, app.ts
 * stops offering calls to this module, so Fastify answers them (503) as it
 * does with the fast path off. `requireConnectProtocolHeader` is not
 * supported: Switchboard leaves it at
 * connect's default (false), so neither path looks at
 * `connect-protocol-version`; turning it on in app.ts means teaching this
 * module first.
 *
 * Everything else — GET requests (connect's GET encoding), streaming
 * content types (`application/connect+*`), other methods or paths, a
 * request URL with a query, a request without an authority — returns
 * `false` and goes to Fastify and connect's handlers unchanged.
 */

/** The Connect fast path for each kind of connection. */
export interface ConnectUnaryHandlers {
  /** Takes an HTTP/2 stream carrying a Connect unary POST to a served method. */
  readonly stream: StreamHandler;
  /** Takes an HTTP/1.1 request carrying a Connect unary POST to a served method. */
  readonly http1: Http1Handler;
}

// Node hands over request headers in lower case; connect's names are
// capitalised ("Connect-Timeout-Ms"), which only its Headers objects ignore.
const CONTENT_TYPE = headerContentType.toLowerCase();
const CONTENT_LENGTH = headerUnaryContentLength.toLowerCase();
const CONTENT_ENCODING = headerUnaryEncoding.toLowerCase();
const ACCEPT_ENCODING = headerUnaryAcceptEncoding.toLowerCase();
const CONNECT_TIMEOUT = headerTimeout.toLowerCase();

/** One Connect unary call, as the transport (HTTP/1.1 or HTTP/2) hands it over. */
interface Exchange {
  readonly route: UnaryRoute;
  /** `application/proto` (true) or `application/json` (false). */
  readonly binary: boolean;
  readonly headers: NodeIncomingHeaders;
  /** The request body. */
  readonly body: Readable;
  readonly url: string;
  readonly peer: Peer;
  /** Abandons `call` when the client goes away before the answer. */
  watch(call: CallLifetime): void;
  /** Writes the whole answer, unless the client is gone. */
  write(status: number, header: Headers, body: Uint8Array): void;
  /** Ends the exchange without an answer (when Node refuses to write one). */
  reset(): void;
}

/** Builds the Connect fast path for the unary methods of `options.services`. */
export function connectUnaryFastPath(options: UnaryFastPathOptions): ConnectUnaryHandlers {
  const { limits, compressMinBytes, acceptCompression, interceptors, routes } =
    unaryServing(options);

  /** The codec of a Connect unary content type: binary, JSON, or undefined (declined). */
  const unaryCodec = (headers: NodeIncomingHeaders): boolean | undefined => {
    const type = parseContentType(header(headers, CONTENT_TYPE));
    return type === undefined || type.stream ? undefined : type.binary;
  };

  const stream: StreamHandler = (stream, headers) => {
    if (headers[":method"] !== "POST") return false;
    const path = headers[":path"];
    const route = path === undefined ? undefined : routes.get(path);
    if (route === undefined) return false;
    const binary = unaryCodec(headers);
    if (binary === undefined) return false;
    // connect-node's Http2ServerRequest.authority: :authority, else host.
    const authority = headers[":authority"] ?? headers.host;
    if (authority === undefined) return false;
    serve({
      route,
      binary,
      headers,
      body: stream,
      url: requestUrl(stream.session?.encrypted === true, authority, path as string),
      peer: peerOf(stream.session?.socket?.remoteAddress, headers["user-agent"]),
      watch(call) {
        stream.on("error", () => undefined); // reported through 'close' / rstCode
        stream.once("close", () => call.abandon(() => errorFromResetCode(stream.rstCode)));
      },
      write(status, header, body) {
        if (stream.destroyed || stream.closed) return;
        stream.respond(nodeHeaders(header, { ":status": status }));
        stream.end(body);
      },
      reset() {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      },
    });
    return true;
  };

  const http1: Http1Handler = (req, res) => {
    if (req.method !== "POST") return false;
    const path = req.url;
    const route = path === undefined ? undefined : routes.get(path);
    if (route === undefined) return false;
    const binary = unaryCodec(req.headers);
    if (binary === undefined) return false;
    const authority = req.headers.host;
    if (authority === undefined) return false;
    const socket = req.socket as http.IncomingMessage["socket"] & { encrypted?: boolean };
    serve({
      route,
      binary,
      headers: req.headers,
      body: req,
      url: requestUrl(socket.encrypted === true, authority, path as string),
      peer: peerOf(socket.remoteAddress, req.headers["user-agent"]),
      watch(call) {
        req.on("error", () => undefined); // reported through the response's 'close'
        res.once("close", () =>
          call.abandon(() => new ConnectError("the client went away", Code.Canceled)),
        );
      },
      write(status, header, body) {
        if (res.destroyed) return;
        res.writeHead(status, nodeHeaders(header));
        res.end(body);
      },
      reset() {
        res.destroy();
      },
    });
    return true;
  };

  return { stream, http1 };

  function serve(x: Exchange): void {
    const { route, binary, headers } = x;
    const timeout = parseTimeout(header(headers, CONNECT_TIMEOUT), Number.MAX_SAFE_INTEGER);
    // The call's one AbortController: client gone, deadline, shutdown.
    const call = new CallLifetime(options.shutdownSignal, timeout.timeoutMs);
    x.watch(call);
    const responseHeader = new FastHeaders({
      [headerContentType]: binary ? contentTypeUnaryProto : contentTypeUnaryJson,
    });
    const responseTrailer = new FastHeaders();
    const context = handlerContext(route, call, {
      protocolName: "connect",
      url: x.url,
      requestHeader: requestHeaders(headers),
      responseHeader,
      responseTrailer,
      values: options.contextValues(x.peer),
    });
    const compression = compressionNegotiate(
      acceptCompression,
      header(headers, CONTENT_ENCODING),
      header(headers, ACCEPT_ENCODING),
      headerUnaryAcceptEncoding,
    );

    const write = (status: number, body: Uint8Array) => {
      if (call.done) return; // the client went away
      call.settle();
      const all = trailerMux(responseHeader, responseTrailer);
      all.set(headerUnaryContentLength, body.byteLength.toString(10));
      try {
        x.write(status, all, body);
      } catch {
        // A header Node refuses to send (an invalid value in error
        // metadata, say): connect-node logs and leaves the call hanging.
        x.reset();
      }
    };
    const send = (status: number, body: Uint8Array) => {
      const compressor = compression.response;
      if (compressor === null || body.byteLength < compressMinBytes) {
        write(status, body);
        return;
      }
      compressor.compress(body).then(
        (compressed) => {
          responseHeader.set(headerUnaryEncoding, compressor.name);
          write(status, compressed);
        },
        // Where connect-node would log and leave the call hanging, the
        // answer goes out uncompressed (gzip and br of bytes in memory do
        // not fail in practice).
        () => write(status, body),
      );
    };
    const fail = (reason: unknown) => {
      const error = toConnectError(reason);
      let body: Uint8Array;
      try {
        responseHeader.set(headerContentType, contentTypeUnaryJson);
        error.metadata.forEach((value, key) => {
          responseHeader.set(key, value);
        });
        body = errorToJsonBytes(error, undefined);
      } catch {
        // Error metadata Headers refuses, details JSON cannot carry:
        // connect-node's handler rejects and leaves the call hanging.
        if (call.done) return;
        call.settle();
        x.reset();
        return;
      }
      send(codeToHttpStatus(error.code), body);
    };

    // As in connect: the encoding and timeout errors are answered before
    // (and without) reading the body.
    const headerError = compression.error ?? timeout.error;
    if (headerError) {
      fail(headerError);
      return;
    }

    const run = async (bytes: Uint8Array): Promise<Uint8Array> => {
      const data = compression.request
        ? await compression.request.decompress(bytes, limits.readMaxBytes)
        : bytes;
      const input = route.serialization.getI(binary).parse(data);
      const output = await invokeUnary(route, context, input, interceptors);
      return route.serialization.getO(binary).serialize(output);
    };
    readBody(x.body, limits.readMaxBytes, header(headers, CONTENT_LENGTH), (result) => {
      if (call.done) return; // the client went away while the body arrived
      if (result instanceof ConnectError) fail(result);
      else run(result).then((body) => send(200, body), fail);
    });
  }
}

/**
 * Reads a unary request body as connect's `readAllBytes` does: with a
 * usable `content-length`, a larger one than `readMaxBytes` fails before a
 * byte is read, and the body must be exactly that long; without one, the
 * running total must stay within `readMaxBytes`. Calls `done` once, with the
 * bytes or the error (same codes and messages as connect's). On an early
 * error the rest of the body is left unread (the stream is paused), as
 * connect leaves it.
 */
function readBody(
  body: Readable,
  readMaxBytes: number,
  contentLength: string | null,
  done: (result: Uint8Array | ConnectError) => void,
): void {
  const hint = contentLength === null ? Number.NaN : Number.parseInt(contentLength, 10);
  const known = Number.isSafeInteger(hint) && hint >= 0;
  if (known && hint > readMaxBytes) {
    done(
      new ConnectError(
        `message size ${hint} is larger than configured readMaxBytes ${readMaxBytes}`,
        Code.ResourceExhausted,
      ),
    );
    return;
  }
  const chunks: Buffer[] = [];
  let received = 0;
  const stop = () => {
    body.off("data", onData);
    body.off("end", onEnd);
  };
  const onData = (chunk: Buffer) => {
    const total = received + chunk.byteLength;
    let error: ConnectError | undefined;
    if (known && total > hint) {
      error = new ConnectError(
        `protocol error: promised ${hint} bytes, received ${total}`,
        Code.InvalidArgument,
      );
    } else if (!known && total > readMaxBytes) {
      error = new ConnectError(
        `message size is larger than configured readMaxBytes ${readMaxBytes}`,
        Code.ResourceExhausted,
      );
    }
    if (error !== undefined) {
      stop();
      body.pause();
      done(error);
      return;
    }
    received = total;
    chunks.push(chunk);
  };
  const onEnd = () => {
    stop();
    if (known && received < hint) {
      done(
        new ConnectError(
          `protocol error: promised ${hint} bytes, received ${received}`,
          Code.InvalidArgument,
        ),
      );
      return;
    }
    done(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, received));
  };
  body.on("data", onData);
  body.on("end", onEnd);
}
