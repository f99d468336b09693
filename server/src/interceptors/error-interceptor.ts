import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ContextValues, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "pino";
import { RequestInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { kLogger, kRequestId } from "../context.js";
import { internal } from "../errors.js";
import { observeStream } from "./observe-stream.js";
import { procedureOf } from "./procedure.js";

const SERVER_SIDE: ReadonlySet<Code> = new Set([
  Code.Internal,
  Code.Unknown,
  Code.Unavailable,
  Code.DataLoss,
]);

/**
 * The longest error message a client gets, in characters. Messages can echo
 * input (a service name, a field value); unbounded, a 70 KB one no longer
 * fits an HTTP/2 header frame as `grpc-message` and the stream is reset
 * without a status.
 */
export const MAX_ERROR_MESSAGE_CHARS = 1024;

/** `err` with its message cut to MAX_ERROR_MESSAGE_CHARS (details, metadata and cause kept). */
function bounded(err: ConnectError): ConnectError {
  if (err.rawMessage.length <= MAX_ERROR_MESSAGE_CHARS) return err;
  const cut = new ConnectError(
    `${err.rawMessage.slice(0, MAX_ERROR_MESSAGE_CHARS - 1)}…`,
    err.code,
    err.metadata,
    undefined,
    err.cause,
  );
  cut.details = err.details;
  return cut;
}

/**
 * The error boundary. Handlers and adapters throw `ConnectError`s with a
 * standard code; anything else is a bug. A bug becomes Internal with a fixed
 * message, so no stack, SQL or file path ever reaches a client, while the
 * original error, with its stack, goes to the log. Messages longer than
 * MAX_ERROR_MESSAGE_CHARS are cut. Works for unary and
 * streaming calls alike (stream errors surface while the response is read).
 */
export function errorInterceptor(logger: Logger): Interceptor {
  const sanitize = (
    err: unknown,
    signal: AbortSignal,
    procedure: string,
    values: ContextValues,
  ): ConnectError => {
    if (err instanceof ConnectError) {
      // The client's own mistakes (AlreadyExists, InvalidArgument, …) are
      // not the server's problem; failures of the server's side are logged
      // with their cause, which the client never sees.
      if (err.cause !== undefined && SERVER_SIDE.has(err.code)) {
        (values.get(kLogger)?.logger ?? logger).error(
          { err: err.cause, code: Code[err.code], procedure },
          err.rawMessage,
        );
      }
      return bounded(err);
    }
    // A client cancellation, deadline or shutdown aborts the call's signal;
    // whatever the handler was awaiting rejects with that reason.
    if (signal.aborted) return ConnectError.from(signal.reason);
    const callLogger = values.get(kLogger)?.logger ?? logger;
    callLogger.error({ err, procedure }, "unexpected error in handler");
    const requestId = values.get(kRequestId);
    if (!requestId) return internal();
    // The request id is all a person needs to quote to support; it is also
    // in the x-request-id header, but UIs render the error, not headers.
    return new ConnectError(`internal error (request id ${requestId})`, Code.Internal, undefined, [
      { desc: RequestInfoSchema, value: create(RequestInfoSchema, { requestId }) },
    ]);
  };
  return (next) => async (req) => {
    const procedure = procedureOf(req);
    try {
      const res = await next(req);
      if (!res.stream) return res;
      return {
        ...res,
        message: observeStream(res.message, {
          onError: (err) => sanitize(err, req.signal, procedure, req.contextValues),
        }),
      };
    } catch (err) {
      throw sanitize(err, req.signal, procedure, req.contextValues);
    }
  };
}
