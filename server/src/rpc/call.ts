import { create, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import { invokeUnaryImplementation } from "@connectrpc/connect/protocol";
import type { Peer } from "../context.js";
import type { NodeIncomingHeaders } from "./headers.js";
import type { UnaryRoute } from "./route-table.js";

/**
 * The call core the drivers share: the lifetime of a call (one signal, the
 * deadline in whole milliseconds, shutdown), its handler context, and the
 * invocation through THE interceptor chain.
 */

/**
 * The longest timer Node can set (2^31 − 1 ms, ~24.8 days). A longer
 * deadline is kept (and reported by `timeoutMs()`) but gets no timer:
 * Node would fire an overflowing one after 1 ms.
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The lifetime of one call: its one AbortController, the deadline timer and
 * the shutdown listener. `settle` ends it quietly when the answer is written;
 * `abandon` ends it by aborting (the client went away).
 *
 * Unlike connect, the signal is not aborted when a call ends normally:
 * connect aborts every call's signals at the end, which costs a DOMException
 * each, and nothing in a unary call listens after it has been answered.
 */
export class CallLifetime {
  /** The handler context's signal. */
  readonly signal: AbortSignal;
  /** True once the call was answered or abandoned. */
  done = false;
  readonly #controller = new AbortController();
  readonly #shutdownSignal: AbortSignal;
  readonly #deadline: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  readonly #onShutdown = () => this.#controller.abort(this.#shutdownSignal.reason);

  /** Starts the call: `timeoutMs` is the client's deadline, if it gave a valid one. */
  constructor(shutdownSignal: AbortSignal, timeoutMs: number | undefined) {
    this.signal = this.#controller.signal;
    this.#shutdownSignal = shutdownSignal;
    if (shutdownSignal.aborted) this.#onShutdown();
    else shutdownSignal.addEventListener("abort", this.#onShutdown);
    if (timeoutMs !== undefined) {
      // Whole milliseconds, as connect keeps it (`new Date(now + timeoutMs)`
      // truncates): `grpc-timeout: 1999672u` is a deadline 1999 ms away.
      this.#deadline = Math.trunc(Date.now() + timeoutMs);
      // As connect's createDeadlineSignal words it.
      const expire = () =>
        this.#controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
      if (timeoutMs <= 0) expire();
      else if (timeoutMs <= MAX_TIMER_MS) this.#timer = setTimeout(expire, timeoutMs);
    }
  }

  /** Milliseconds left until the deadline (undefined without one), an integer. */
  readonly timeoutMs = (): number | undefined =>
    this.#deadline === undefined ? undefined : this.#deadline - Date.now();

  /** The answer is being written: stop the timer, leave the shutdown signal; no abort. */
  settle(): void {
    this.done = true;
    clearTimeout(this.#timer);
    this.#shutdownSignal.removeEventListener("abort", this.#onShutdown);
  }

  /**
   * The client went away before the answer: settle, and abort the signal
   * with `reason()`. The reason is made only then — building an error (a
   * stack trace) per call is not free.
   */
  abandon(reason: () => unknown): void {
    if (this.done) return;
    this.settle();
    this.#controller.abort(reason());
  }
}

/** What the handler context is made of, besides the route and the lifetime. */
export interface ContextInit {
  readonly protocolName: string;
  readonly url: string;
  readonly requestHeader: Headers;
  readonly responseHeader: Headers;
  readonly responseTrailer: Headers;
  readonly values: ContextValues;
}

/**
 * The handler context of a POST to `route`, with the fields connect's
 * `createHandlerContext` gives it (and that `invokeUnaryImplementation` reads).
 */
export function handlerContext(
  route: UnaryRoute,
  call: CallLifetime,
  init: ContextInit,
): HandlerContext {
  return {
    method: route.method,
    service: route.service,
    requestMethod: "POST",
    protocolName: init.protocolName,
    url: init.url,
    signal: call.signal,
    timeoutMs: call.timeoutMs,
    requestHeader: init.requestHeader,
    responseHeader: init.responseHeader,
    responseTrailer: init.responseTrailer,
    values: init.values,
  };
}

/**
 * Runs a unary call as connect does: connect's own
 * `invokeUnaryImplementation`, so THE interceptor chain wraps the handler.
 */
export function invokeUnary(
  route: UnaryRoute,
  context: HandlerContext,
  input: MessageShape<DescMessage>,
  interceptors: Interceptor[],
): Promise<MessageShape<DescMessage>> {
  return invokeUnaryImplementation(
    route.spec,
    // invokeUnaryImplementation spreads the context into what the handler
    // gets; it needs nothing beyond HandlerContext.
    context as Parameters<typeof invokeUnaryImplementation>[1],
    input,
    interceptors,
  );
}

/**
 * What an unary call's request message is until the chain reaches the
 * request gate (request-gate.ts), which puts the parsed message in its
 * place: an empty message of the input type, shared and frozen.
 */
export function placeholder(route: UnaryRoute): MessageShape<DescMessage> {
  let empty = placeholders.get(route.method.input);
  if (empty === undefined) {
    empty = Object.freeze(create(route.method.input));
    placeholders.set(route.method.input, empty);
  }
  return empty;
}
const placeholders = new WeakMap<DescMessage, MessageShape<DescMessage>>();

/** A request header by its lower-case name (connect's constants are capitalised). */
export function header(headers: NodeIncomingHeaders, name: string): string | null {
  const value = headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(", ") : String(value);
}

/** Where the call came from, as the context values see it (as Fastify's `req.ip` does). */
export function peerOf(
  remoteAddress: string | undefined,
  userAgent: string | string[] | undefined,
): Peer {
  return { ip: remoteAddress ?? "unknown", userAgent: String(userAgent ?? "").slice(0, 256) };
}

/** What connect's handlers make of anything a handler throws. */
export function toConnectError(error: unknown): ConnectError {
  return error instanceof ConnectError
    ? error
    : new ConnectError("internal error", Code.Internal, undefined, undefined, error);
}
