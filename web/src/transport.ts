import type { Interceptor, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

/**
 * The two protocols a browser can speak to Switchboard. Connect (JSON over
 * HTTP/1.1, readable in devtools) is the default; gRPC-Web (binary) is
 * chosen with the setting in the header or `?transport=grpc-web`.
 * Both go to the page's own origin: the server serves the app and the API
 * on one port, and the Vite dev server proxies the RPC paths.
 */
export type TransportKind = "connect" | "grpc-web";

export const TRANSPORT_KINDS: ReadonlyArray<{ kind: TransportKind; label: string }> = [
  { kind: "connect", label: "Connect" },
  { kind: "grpc-web", label: "gRPC-Web" },
];

export const TRANSPORT_PARAM = "transport";

export function parseTransportKind(value: string | null | undefined): TransportKind {
  return value === "grpc-web" || value === "grpcweb" ? "grpc-web" : "connect";
}

/** The kind named in the current URL (`?transport=`), else Connect. */
export function transportKindFromLocation(): TransportKind {
  return parseTransportKind(new URLSearchParams(window.location.search).get(TRANSPORT_PARAM));
}

/** A transport of `kind` to this origin with `interceptors`. */
export function createTransport(kind: TransportKind, interceptors: Interceptor[] = []): Transport {
  const baseUrl = window.location.origin;
  return kind === "grpc-web"
    ? createGrpcWebTransport({ baseUrl, interceptors })
    : createConnectTransport({ baseUrl, interceptors });
}
