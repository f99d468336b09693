import type { ContextValues } from "@connectrpc/connect";
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
  parseTimeout,
  trailerMux,
} from "@connectrpc/connect/protocol-connect";
import {
  CallLifetime,
  handlerContext,
  header,
  invokeUnary,
  placeholder,
  toConnectError,
} from "./call.js";
import { type Exchange, gone } from "./exchange.js";
import { FastHeaders } from "./headers.js";
import { deferBody } from "./request-gate.js";
import type { UnaryRoute } from "./route-table.js";
import type { Serving } from "./serving.js";
import { readUnaryBody } from "./unary-body.js";

/**
 * The Connect unary driver: Connect-protocol unary POSTs (`application/proto`,
 * `application/json`) over HTTP/1.1 and HTTP/2, doing what connect 2.1.2's
 * Connect handler (`protocol-connect/handler-factory.js`,
 * `createUnaryHandler`) does, with plain callbacks:
 *
 *   headers → parse connect-timeout-ms, negotiate content-encoding /
 *   accept-encoding → read the body (content-length checked against
 *   readMaxBytes before a byte is read) → decompress, parse (binary or JSON,
 *   with the engine's jsonOptions) → connect's own
 *   `invokeUnaryImplementation` with THE interceptor chain → serialize → one
 *   response: status, headers (trailers as `trailer-*` headers,
 *   `trailerMux`), content-length, body (compressed at or above
 *   `compressMinBytes`).
 *
 * Same answers as connect's handler (test/connect-unary-differential.test.ts,
 * HTTP/1.1 and HTTP/2, both codecs). Differences, on purpose: one
 * AbortController per call, not aborted on a normal end; where connect-node
 * logs an error and leaves the call hanging (response compression failing,
 * Node refusing a response header), the answer goes out uncompressed, or
 * the exchange is reset. GET requests and `requireConnectProtocolHeader`
 * go to the universal driver.
 */

const CONTENT_LENGTH = headerUnaryContentLength.toLowerCase();
const CONTENT_ENCODING = headerUnaryEncoding.toLowerCase();
const ACCEPT_ENCODING = headerUnaryAcceptEncoding.toLowerCase();
const CONNECT_TIMEOUT = headerTimeout.toLowerCase();

/** Serves one Connect unary POST to `route`; `binary`: application/proto (else JSON). */
export function serveConnectUnary(
  serving: Serving,
  route: UnaryRoute,
  binary: boolean,
  x: Exchange,
  url: string,
  values: ContextValues,
): void {
  const { headers } = x;
  const timeout = parseTimeout(header(headers, CONNECT_TIMEOUT), serving.maxTimeoutMs);
  // The call's one AbortController: client gone, deadline, shutdown.
  const call = new CallLifetime(serving.shutdownSignal, timeout.timeoutMs);
  x.onClose((reason) => call.abandon(() => reason ?? gone()));
  const responseHeader = new FastHeaders({
    [headerContentType]: binary ? contentTypeUnaryProto : contentTypeUnaryJson,
  });
  const responseTrailer = new FastHeaders();
  const context = handlerContext(route, call, {
    protocolName: "connect",
    url,
    requestHeader: FastHeaders.fromNode(headers),
    responseHeader,
    responseTrailer,
    values,
  });
  const compression = compressionNegotiate(
    serving.acceptCompression,
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
      if (!x.writable) return;
      x.respond(status, all, false);
      x.end(body);
    } catch {
      // A header Node refuses to send (an invalid value in error
      // metadata, say): connect-node logs and leaves the call hanging.
      x.reset();
    }
  };
  const send = (status: number, body: Uint8Array) => {
    const compressor = compression.response;
    if (compressor === null || body.byteLength < serving.compressMinBytes) {
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

  /** Reads the body and parses the message, failing as connect's handler fails. */
  const readMessage = () =>
    new Promise<unknown>((resolve, reject) => {
      readUnaryBody(
        x.body,
        serving.readMaxBytes,
        header(headers, CONTENT_LENGTH),
        x.budget,
        (result) => {
          if (!(result instanceof Uint8Array)) return reject(result);
          const decompressed = compression.request
            ? compression.request.decompress(result, serving.readMaxBytes)
            : Promise.resolve(result);
          decompressed
            .then((data) => resolve(route.serialization.getI(binary).parse(data)))
            .catch(reject);
        },
      );
    });

  // The body is read when the call reaches the request gate (request-gate.ts).
  deferBody(values, x, readMessage);
  invokeUnary(route, context, placeholder(route), serving.interceptors)
    .then((output) => send(200, route.serialization.getO(binary).serialize(output)), fail)
    .catch(() => x.reset());
}
