import http2 from "node:http2";
import type { DescMessage, DescMethod, DescService, MessageShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ContextValues,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import {
  type Compression,
  createMethodSerializationLookup,
  invokeUnaryImplementation,
  type MethodSerializationLookup,
} from "@connectrpc/connect/protocol";
import type { Peer } from "../context.js";
import { FastHeaders, type NodeIncomingHeaders } from "./headers.js";

export type { NodeIncomingHeaders } from "./headers.js";

/**
 * What Switchboard's unary fast paths (grpc-unary.ts: gRPC on HTTP/2;
 * connect-unary.ts: the Connect protocol on HTTP/1.1 and HTTP/2) share, so
 * that both serve a call exactly the same way apart from the wire format:
 *
 * - the options (the same ones connect's handlers are configured with);
 * - the route table: every unary method of the served services, with
 *   connect's own implementation spec (`createServiceImplSpec`) and
 *   serialization (`createMethodSerializationLookup`, with the read/write
 *   limits);
 * - the call's lifetime: ONE AbortController per call, aborted by a client
 *   that goes away, the deadline or shutdown — and not aborted when the call
 *   ends normally (connect aborts every call's signals at the end, which
 *   costs a DOMException each; nothing in Switchboard listens after a unary
 *   call has been answered);
 * - the handler context as connect's `createHandlerContext` builds it (what
 *   `invokeUnaryImplementation` hands to the interceptors and the handler);
 * - request headers as connect-node converts them (`nodeHeaderToWebHeader`),
 *   the peer for `contextValues`, and the reason for a reset HTTP/2 stream
 *   (connect-node's `connectErrorFromH2ResetCode`).
 *
 * Nothing in here writes to the wire: the protocol modules do.
 */

/** A service and its implementation (the same object the connect router serves). */
export interface ServedService {
  readonly service: DescService;
  readonly impl: Partial<ServiceImpl<DescService>>;
}

/** Pairs a service with its implementation, type-checked against each other. */
export function servedBy<S extends DescService>(service: S, impl: ServiceImpl<S>): ServedService {
  return { service, impl: impl as unknown as Partial<ServiceImpl<DescService>> };
}

/** connect's default `compressMinBytes`: smaller responses are sent uncompressed. */
export const DEFAULT_COMPRESS_MIN_BYTES = 1024;

/** The limits and options connect's handlers are configured with. */
export interface UnaryFastPathOptions {
  /** The services, as `servedBy(Service, impl)` pairs. */
  readonly services: readonly ServedService[];
  readonly interceptors: readonly Interceptor[];
  readonly contextValues: (peer: Peer) => ContextValues;
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  readonly acceptCompression: readonly Compression[];
  /** Responses smaller than this are not compressed (connect's default: 1 KiB). */
  readonly compressMinBytes?: number;
  readonly shutdownSignal: AbortSignal;
}

/** The options as a fast path serves them: connect's defaults applied, the routes built. */
export interface UnaryServing {
  readonly limits: { readonly readMaxBytes: number; readonly writeMaxBytes: number };
  /** Responses smaller than this are not compressed. */
  readonly compressMinBytes: number;
  readonly acceptCompression: Compression[];
  readonly interceptors: Interceptor[];
  /** The unary methods of the served services by request path. */
  readonly routes: ReadonlyMap<string, UnaryRoute>;
}

/** Applies connect's defaults to `options` (compressMinBytes: 1 KiB) and builds the routes. */
export function unaryServing(options: UnaryFastPathOptions): UnaryServing {
  const limits = { readMaxBytes: options.readMaxBytes, writeMaxBytes: options.writeMaxBytes };
  return {
    limits,
    compressMinBytes: options.compressMinBytes ?? DEFAULT_COMPRESS_MIN_BYTES,
    acceptCompression: [...options.acceptCompression],
    interceptors: [...options.interceptors],
    routes: unaryRoutes(options.services, limits),
  };
}

/** One unary method of a served service, ready to be called. */
export interface UnaryRoute {
  readonly spec: MethodImplSpec & { kind: "unary" };
  readonly method: DescMethod;
  readonly service: DescService;
  /** connect's serializers (binary and JSON), limited to readMaxBytes / writeMaxBytes. */
  readonly serialization: MethodSerializationLookup<DescMessage, DescMessage>;
}

/**
 * The implemented methods of one kind of `services`, each with its request
 * path (`/package.Service/Method`) and connect's implementation spec.
 */
export function* servedMethods<K extends MethodImplSpec["kind"]>(
  services: readonly ServedService[],
  kind: K,
): Generator<{
  readonly path: string;
  readonly spec: MethodImplSpec & { kind: K };
  readonly service: DescService;
}> {
  for (const { service, impl } of services) {
    const serviceSpec = createServiceImplSpec(service, impl);
    for (const method of service.methods) {
      const spec = serviceSpec.methods[method.localName];
      if (spec?.kind !== kind) continue;
      yield {
        path: `/${service.typeName}/${method.name}`,
        spec: spec as MethodImplSpec & { kind: K },
        service,
      };
    }
  }
}

/** The unary methods of `services` by request path. */
export function unaryRoutes(
  services: readonly ServedService[],
  limits: { readonly readMaxBytes: number; readonly writeMaxBytes: number },
): ReadonlyMap<string, UnaryRoute> {
  const routes = new Map<string, UnaryRoute>();
  for (const { path, spec, service } of servedMethods(services, "unary")) {
    routes.set(path, {
      spec,
      method: spec.method,
      service,
      serialization: createMethodSerializationLookup(spec.method, undefined, undefined, limits),
    });
  }
  return routes;
}

/**
 * The lifetime of one call: its one AbortController, the deadline timer and
 * the shutdown listener. `settle` ends it quietly when the answer is written;
 * `abandon` ends it by aborting (the client went away).
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
      this.#deadline = Date.now() + timeoutMs;
      // As connect's createDeadlineSignal words it.
      const expire = () =>
        this.#controller.abort(new ConnectError("the operation timed out", Code.DeadlineExceeded));
      if (timeoutMs <= 0) expire();
      else this.#timer = setTimeout(expire, timeoutMs);
    }
  }

  /** Milliseconds left until the deadline (undefined without one), as connect computes it. */
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
   * with `reason()`. The reason is made only then — every call's stream
   * closes, and building an error (a stack trace) per call is not free.
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
 * `createHandlerContext` gives it (and that `invokeUnaryImplementation`
 * reads).
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
 * The request URL connect-node gives the handler context. (connect-node
 * normalises it through `new URL`; for the authorities and paths the fast
 * paths accept — an exact route, no query — that is the same string, and
 * nothing in Switchboard reads it.)
 */
export function requestUrl(encrypted: boolean, authority: string, path: string): string {
  return `${encrypted ? "https" : "http"}://${authority}${path}`;
}

/**
 * Runs the call as connect does: connect's own `invokeUnaryImplementation`,
 * so THE interceptor chain (`applyInterceptors`) wraps the handler, and the
 * response headers and trailers the chain returns are copied into the
 * context's.
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

/** A request header by its lower-case name (connect's constants are capitalised). */
export function header(headers: NodeIncomingHeaders, name: string): string | null {
  const value = headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(", ") : String(value);
}

/**
 * The request metadata as connect-node presents it (`nodeHeaderToWebHeader`):
 * every header but the HTTP/2 pseudo-headers — as a view of Node's object
 * that copies nothing unless written to (see headers.ts).
 */
export function requestHeaders(headers: NodeIncomingHeaders): Headers {
  return FastHeaders.fromNode(headers);
}

/** Response headers as connect-node hands them to Node (`webHeaderToNodeHeaders`). */
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
 * The handler signal's reason when an HTTP/2 client goes away mid-call,
 * mapped from the RST_STREAM code as connect-node maps it. (connect-node
 * aborts with a bare AbortError for NO_ERROR; here it is Canceled, which is
 * what the call is — nobody reads the answer either way.)
 */
export function errorFromResetCode(rstCode: number | undefined): ConnectError {
  const c = http2.constants;
  const message = `http/2 stream closed with error code ${H2_CODE_NAMES[rstCode ?? 0] ?? "UNKNOWN"} (0x${(rstCode ?? 0).toString(16)})`;
  switch (rstCode) {
    case c.NGHTTP2_CANCEL:
      return new ConnectError(message, Code.Canceled);
    case c.NGHTTP2_REFUSED_STREAM:
      return new ConnectError(message, Code.Unavailable);
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return new ConnectError(message, Code.ResourceExhausted);
    case c.NGHTTP2_INADEQUATE_SECURITY:
    case c.NGHTTP2_HTTP_1_1_REQUIRED:
      return new ConnectError(message, Code.PermissionDenied);
    case c.NGHTTP2_PROTOCOL_ERROR:
    case c.NGHTTP2_INTERNAL_ERROR:
    case c.NGHTTP2_FLOW_CONTROL_ERROR:
    case c.NGHTTP2_SETTINGS_TIMEOUT:
    case c.NGHTTP2_FRAME_SIZE_ERROR:
    case c.NGHTTP2_COMPRESSION_ERROR:
    case c.NGHTTP2_CONNECT_ERROR:
      return new ConnectError(message, Code.Internal);
    default:
      return new ConnectError("the client went away", Code.Canceled);
  }
}
