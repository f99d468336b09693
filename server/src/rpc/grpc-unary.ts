import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues } from "@connectrpc/connect";
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
  headerTimeout,
  parseTimeout,
  setTrailerStatus,
} from "@connectrpc/connect/protocol-grpc";
import {
  contentTypeProto as contentTypeGrpcWebProto,
  trailerFlag,
  trailerSerialize,
} from "@connectrpc/connect/protocol-grpc-web";
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
import { ENVELOPE_PREFIX_BYTES, readUnaryEnvelopes } from "./unary-body.js";

/**
 * The gRPC and gRPC-Web unary driver: binary (`application/grpc[+proto]`,
 * `application/grpc-web[+proto]`) unary calls, served with plain callbacks where connect's gRPC handler runs
 * a pipeline of async generators (connect 2.1.2,
 * `protocol-grpc/handler-factory.js`):
 *
 *   headers → negotiate compression, parse grpc-timeout → read the body
 *   (envelope limits as it arrives) → decompress, parse → connect's own
 *   `invokeUnaryImplementation` with THE interceptor chain → one envelope,
 *   headers, trailers.
 *
 * Same answers as connect's handler (test/grpc-unary-differential.test.ts):
 * status, messages, `grpc-status-details-bin`, error metadata, headers and
 * trailers, compression, limits, deadlines and cancellation. Differences, on
 * purpose: one AbortController per call, not aborted on a normal end; a
 * Node-refused header resets the stream instead of leaving it hanging.
 */

// Node hands over request headers in lower case; connect's names are
// capitalised ("Grpc-Timeout"), which only its Headers objects ignore.
export const GRPC_TIMEOUT = headerTimeout.toLowerCase();
export const GRPC_ENCODING = headerEncoding.toLowerCase();
export const GRPC_ACCEPT_ENCODING = headerAcceptEncoding.toLowerCase();

/** One message as one envelope (every byte written, so no zero fill). */
export function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(ENVELOPE_PREFIX_BYTES + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, ENVELOPE_PREFIX_BYTES);
  return out;
}

/**
 * Serves one binary unary call to `route`: gRPC (`web` false; HTTP/2, the
 * status in HTTP trailers) or gRPC-Web (`web` true; HTTP/1.1 or HTTP/2, the
 * status in a trailer frame at the end of the body, which is never
 * compressed: not every gRPC-Web client accepts a compressed one).
 */
export function serveGrpcUnary(
  serving: Serving,
  route: UnaryRoute,
  x: Exchange,
  url: string,
  values: ContextValues,
  web: boolean,
): void {
  const { headers } = x;
  const timeout = parseTimeout(header(headers, GRPC_TIMEOUT), serving.maxTimeoutMs);
  const compression = compressionNegotiate(
    serving.acceptCompression,
    header(headers, GRPC_ENCODING),
    header(headers, GRPC_ACCEPT_ENCODING),
    headerAcceptEncoding,
  );
  const responseHeader = new FastHeaders({
    [headerContentType]: web ? contentTypeGrpcWebProto : contentTypeProto,
  });
  if (compression.response) responseHeader.set(headerEncoding, compression.response.name);
  const responseTrailer = new FastHeaders({ [headerGrpcStatus]: grpcStatusOk.toString() });
  const input = route.serialization.getI(true);
  const output = route.serialization.getO(true);

  // The call's one AbortController: client reset, deadline, shutdown.
  const call = new CallLifetime(
    serving.shutdownSignal,
    timeout.error === undefined ? timeout.timeoutMs : undefined,
  );
  x.onClose((reason) => call.abandon(() => reason ?? gone()));

  const respond = (message: Uint8Array | undefined) => {
    call.settle();
    if (!x.writable) return;
    if (!web) {
      x.respond(200, responseHeader, true);
      x.end(message, responseTrailer);
      return;
    }
    const trailer = envelope(trailerFlag, trailerSerialize(responseTrailer));
    x.respond(200, responseHeader, false);
    x.end(message === undefined ? trailer : Buffer.concat([message, trailer]));
  };
  const fail = (error: unknown) => {
    setTrailerStatus(responseTrailer, toConnectError(error));
    respond(undefined);
  };

  // Protocol errors in the headers win over anything in the body.
  const headerError = compression.error ?? timeout.error;
  if (headerError) {
    x.body.resume();
    fail(headerError);
    return;
  }

  const context = handlerContext(route, call, {
    protocolName: "grpc",
    url,
    requestHeader: FastHeaders.fromNode(headers),
    responseHeader,
    responseTrailer,
    values,
  });
  const parse = async (env: EnvelopedMessage) =>
    input.parse((await envelopeDecompress(env, compression.request, serving.readMaxBytes)).data);

  const encode = async (message: MessageShape<DescMessage>) => {
    let data = output.serialize(message);
    let flags = 0;
    if (compression.response && data.byteLength >= serving.compressMinBytes) {
      data = await compression.response.compress(data);
      flags = compressedFlag;
    }
    return envelope(flags, data);
  };

  /** Reads the body and parses its one message, failing as connect's handler fails. */
  const readMessage = () =>
    new Promise<MessageShape<DescMessage>>((resolve, reject) => {
      readUnaryEnvelopes(x.body, serving.readMaxBytes, x.budget, (error, first, second) => {
        if (error !== undefined && first === undefined) return reject(error);
        if (first === undefined) {
          return reject(
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
          parse(first)
            .then(() => (second ? parse(second) : undefined))
            .then(() => {
              throw (
                error ??
                new ConnectError(
                  "protocol error: received extra input message for unary method",
                  Code.Unimplemented,
                )
              );
            })
            .catch(reject);
          return;
        }
        parse(first).then(resolve, reject);
      });
    });

  // The body is read when the call reaches the request gate (request-gate.ts).
  deferBody(values, x, readMessage);
  // Node refusing a header (e.g. an interceptor set an invalid value)
  // throws from `respond`: the exchange is reset rather than left hanging.
  invokeUnary(route, context, placeholder(route), serving.interceptors)
    .then(encode)
    .then(respond, fail)
    .catch(() => x.reset());
}
