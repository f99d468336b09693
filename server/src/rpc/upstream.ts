import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";

/**
 * What the engine mirrors from connect-node's internals, which the package
 * does not export. Tracks **@connectrpc/connect-node 2.1.2**
 * (`node-error.ts`, `node-universal-header.ts`); when connect is upgraded,
 * compare these with the new version's files first.
 */

/** RST_STREAM codes by name, for messages (as connect-node words them). */
const H2_CODE_NAMES = [
  "NO_ERROR",
  "PROTOCOL_ERROR",
  "INTERNAL_ERROR",
  "FLOW_CONTROL_ERROR",
  "SETTINGS_TIMEOUT",
  "STREAM_CLOSED",
  "FRAME_SIZE_ERROR",
  "REFUSED_STREAM",
  "CANCEL",
  "COMPRESSION_ERROR",
  "CONNECT_ERROR",
  "ENHANCE_YOUR_CALM",
  "INADEQUATE_SECURITY",
  "HTTP_1_1_REQUIRED",
];

/**
 * The error an HTTP/2 reset code stands for (connect-node's
 * `connectErrorFromH2ResetCode`); undefined for NO_ERROR, STREAM_CLOSED and
 * codes it does not map.
 */
export function errorFromResetCode(rstCode: number | undefined): ConnectError | undefined {
  const c = http2.constants;
  const code = rstCode ?? 0;
  const message = `http/2 stream closed with error code ${H2_CODE_NAMES[code] ?? "UNKNOWN"} (0x${code.toString(16)})`;
  switch (rstCode) {
    case c.NGHTTP2_PROTOCOL_ERROR:
    case c.NGHTTP2_INTERNAL_ERROR:
    case c.NGHTTP2_FLOW_CONTROL_ERROR:
    case c.NGHTTP2_SETTINGS_TIMEOUT:
    case c.NGHTTP2_FRAME_SIZE_ERROR:
    case c.NGHTTP2_COMPRESSION_ERROR:
    case c.NGHTTP2_CONNECT_ERROR:
      return new ConnectError(message, Code.Internal);
    case c.NGHTTP2_REFUSED_STREAM:
      return new ConnectError(message, Code.Unavailable);
    case c.NGHTTP2_CANCEL:
      return new ConnectError(message, Code.Canceled);
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return new ConnectError(message, Code.ResourceExhausted);
    case c.NGHTTP2_INADEQUATE_SECURITY:
    case c.NGHTTP2_HTTP_1_1_REQUIRED:
      return new ConnectError(message, Code.PermissionDenied);
    default:
      return undefined;
  }
}

/** The error codes Node gives a stream the client tore down (connect-node's list). */
const GONE = new Set(["ERR_STREAM_DESTROYED", "ERR_HTTP2_INVALID_STREAM", "ECONNRESET"]);

/**
 * A Node.js stream error as a ConnectError (connect-node's
 * `connectErrorFromNodeReason`): writes after the end and torn-down
 * streams are Aborted (the client hung up), the rest Internal.
 */
export function errorFromNodeReason(reason: unknown): ConnectError {
  let code = Code.Internal;
  const seen: unknown[] = [];
  for (let r = reason; r instanceof Error && !seen.includes(r); r = r.cause) {
    seen.push(r);
    const nodeCode = (r as { code?: unknown }).code;
    if (nodeCode === "ERR_STREAM_WRITE_AFTER_END" || GONE.has(String(nodeCode))) {
      code = Code.Aborted;
      break;
    }
  }
  const error = ConnectError.from(reason, code);
  if (error !== reason) error.cause = reason;
  return error;
}

/**
 * Response headers as connect-node hands them to Node
 * (`webHeaderToNodeHeaders`): repeated values kept as arrays.
 */
export function nodeHeaders(
  headers: Headers,
  into: Record<string, string | string[] | number> = {},
): Record<string, string | string[] | number> {
  headers.forEach((value, key) => {
    const existing = into[key];
    if (existing === undefined) into[key] = value;
    else if (Array.isArray(existing)) existing.push(value);
    else into[key] = [String(existing), value];
  });
  return into;
}
