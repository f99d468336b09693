import { performance } from "node:perf_hooks";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { kAuth, kLogger, kPeer, kRequestId } from "../context.js";
import { observeStream } from "./observe-stream.js";
import { procedureOf } from "./procedure.js";

/** The wire protocol of a call. */
export type Protocol = "grpc" | "grpc-web" | "connect";

/** The protocol of a call, from its request content-type (Connect GET requests have none). */
export function protocolOf(header: Headers): Protocol {
  const contentType = (header.get("content-type") ?? "").toLowerCase();
  if (contentType.startsWith("application/grpc-web")) return "grpc-web";
  if (contentType.startsWith("application/grpc")) return "grpc";
  return "connect";
}

/** Codes that mean the server failed (logged at warn), not the caller. */
const SERVER_SIDE: ReadonlySet<Code> = new Set([
  Code.Internal,
  Code.Unknown,
  Code.Unavailable,
  Code.DataLoss,
]);

/**
 * The code a call ends with, as the client sees it: a ConnectError's own;
 * for anything else the call's abort reason if it was aborted (client
 * cancel, deadline, shutdown — e.g. a write to a closed stream fails), else
 * Internal, which is what Connect sends for a non-ConnectError.
 */
function codeOf(err: unknown, signal: AbortSignal): Code {
  if (err instanceof ConnectError) return err.code;
  if (signal.aborted) return ConnectError.from(signal.reason, Code.Canceled).code;
  return Code.Internal;
}

/**
 * One access-log line ("rpc") per call, written when the call ends: unary
 * calls when the response or error is ready; streams when the response
 * stream finishes, fails or is cancelled.
 *
 * Fields: `procedure`, `protocol`, `peer`, `user`, `code` (`ok` or the
 * Connect code name, e.g. `invalid_argument`), `durationMs`, `requestId`,
 * and on streaming calls `messagesReceived` / `messagesSent`. Level warn for
 * server-side failures (internal, unknown, unavailable, data_loss), info
 * otherwise. It uses the call's logger (`kLogger`) when the request-id
 * interceptor runs outside this one (that logger is bound to `requestId` and
 * `procedure`, which are then not repeated), else `fallbackLogger`.
 *
 * `user` is read at the end of the call, so auth may run inside this
 * interceptor — as long as it sets `kAuth` on the call's own context values
 * (`req.contextValues.set`). Errors pass through unchanged; put this
 * interceptor outside the error boundary to log the code the client gets.
 */
export function accessLogInterceptor(fallbackLogger: Logger): Interceptor {
  return (next) => async (req) => {
    const start = performance.now();
    const streaming = req.stream;
    let messagesReceived = 0;
    let messagesSent = 0;
    let logged = false;
    const log = (code: Code | undefined) => {
      if (logged) return;
      logged = true;
      const values = req.contextValues;
      const callLogger = values.get(kLogger);
      const level = code !== undefined && SERVER_SIDE.has(code) ? "warn" : "info";
      // A line nobody will see is not built (LOG_LEVEL above this one), nor
      // is the call's child logger.
      if (!(callLogger?.base ?? fallbackLogger).isLevelEnabled(level)) return;
      const logger = callLogger?.logger ?? fallbackLogger;
      // The call logger (request-id interceptor) is bound to requestId and
      // procedure already; pino's bindings() would re-parse them per call.
      const bound = callLogger !== undefined;
      const fields: Record<string, unknown> = {};
      if (!bound) fields.procedure = procedureOf(req);
      fields.protocol = protocolOf(req.header);
      fields.peer = values.get(kPeer).ip;
      fields.user = values.get(kAuth)?.userId;
      fields.code = code === undefined ? "ok" : codeToString(code);
      fields.durationMs = Math.round((performance.now() - start) * 10) / 10;
      const requestId = values.get(kRequestId);
      if (!bound && requestId !== "") fields.requestId = requestId;
      if (streaming) {
        fields.messagesReceived = messagesReceived;
        fields.messagesSent = messagesSent;
      }
      logger[level](fields, "rpc");
    };

    // Count what the handler reads (client and bidi streams; a server
    // stream's single request counts as one).
    const counted: typeof req = req.stream
      ? {
          ...req,
          message: (async function* (input) {
            for await (const message of input) {
              messagesReceived++;
              yield message;
            }
          })(req.message),
        }
      : req;

    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(counted);
    } catch (err) {
      log(codeOf(err, req.signal));
      throw err;
    }
    if (!res.stream) {
      log(undefined);
      return res;
    }
    return {
      ...res,
      message: observeStream(res.message, {
        // The transport took a message and asks for more.
        onResume: () => {
          messagesSent++;
        },
        onError: (err) => {
          log(codeOf(err, req.signal));
          return err;
        },
        onEnd: (how) => {
          // After an error it was logged; otherwise the stream either
          // completed or was abandoned (the consumer stopped reading).
          if (how === "done") log(undefined);
          else if (how === "return") {
            log(req.signal.aborted ? codeOf(undefined, req.signal) : Code.Canceled);
          }
        },
      }),
    };
  };
}
