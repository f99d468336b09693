import {
  headerAcceptEncoding,
  headerContentType,
  headerEncoding,
  headerTimeout,
} from "@connectrpc/connect/protocol-grpc";

/**
 * What the two gRPC fast paths (grpc-unary.ts, grpc-server-stream.ts) share
 * on the wire: request header names as Node hands them over, and the
 * 5-byte envelope. Decompressing an envelope is connect's own
 * `envelopeDecompress`.
 */

// Node hands over request headers in lower case; connect's names are
// capitalised ("Grpc-Timeout"), which only its Headers objects ignore.
export const CONTENT_TYPE = headerContentType.toLowerCase();
export const GRPC_TIMEOUT = headerTimeout.toLowerCase();
export const GRPC_ENCODING = headerEncoding.toLowerCase();
export const GRPC_ACCEPT_ENCODING = headerAcceptEncoding.toLowerCase();

/** Flags byte and 4-byte big-endian length before every message. */
export const HEADER_PREFIX_BYTES = 5;

/**
 * One message as one envelope. connect's `encodeEnvelope` does the same into
 * a zero-filled Uint8Array through a DataView; this one skips the zero fill
 * (every byte is written) and hands Node's stream a Buffer, once per message
 * on the hot path.
 */
export function envelope(flags: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER_PREFIX_BYTES + data.byteLength);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, HEADER_PREFIX_BYTES);
  return out;
}
