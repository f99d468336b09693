import { readFileSync } from "node:fs";
import type { DescService } from "@bufbuild/protobuf";
import { type Client, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { UsageError } from "./errors.js";

/** The three protocols the server speaks on one port. */
export const PROTOCOLS = ["grpc", "grpc-web", "connect"] as const;
export type Protocol = (typeof PROTOCOLS)[number];

export const DEFAULT_ADDRESS = "http://localhost:8080";

/** Where and how to connect. */
export interface Endpoint {
  /** Base URL for calls, e.g. `https://localhost:8443`. */
  readonly baseUrl: string;
  /** The key of this server in the credentials file: the URL's origin. */
  readonly key: string;
  readonly tls: boolean;
  /** --ca: PEM of the CA to trust (instead of the system's). */
  readonly ca?: Buffer;
  /** --insecure: do not verify the server's certificate. */
  readonly insecure: boolean;
}

/** The connection options the program accepts. */
export interface EndpointOptions {
  readonly addr?: string;
  readonly tls?: boolean;
  readonly ca?: string;
  readonly insecure?: boolean;
}

/**
 * Resolves --addr/--tls/--ca/--insecure. The address may omit its scheme
 * (`localhost:8080`). TLS is on with an https:// address, or with --tls,
 * --ca or --insecure (which then turn an http:// address into https://).
 */
export function resolveEndpoint(options: EndpointOptions): Endpoint {
  let addr = (options.addr ?? DEFAULT_ADDRESS).trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(addr)) addr = `http://${addr}`;
  let url: URL;
  try {
    url = new URL(addr);
  } catch {
    throw new UsageError(`--addr ${options.addr}: not an address (expected e.g. localhost:8080)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new UsageError(`--addr ${options.addr}: only http:// and https:// are supported`);
  }
  const tls = url.protocol === "https:" || !!options.tls || !!options.ca || !!options.insecure;
  if (tls) url.protocol = "https:";
  let ca: Buffer | undefined;
  if (options.ca) {
    try {
      ca = readFileSync(options.ca);
    } catch (error) {
      throw new UsageError(`--ca ${options.ca}: ${(error as Error).message}`);
    }
    if (!ca.includes("-----BEGIN CERTIFICATE-----")) {
      throw new UsageError(`--ca ${options.ca}: not a PEM certificate`);
    }
  }
  const baseUrl = url.href.replace(/\/$/, "");
  return { baseUrl, key: url.origin, tls, insecure: !!options.insecure, ...(ca ? { ca } : {}) };
}

/**
 * Builds a connect-node transport. gRPC always runs over HTTP/2 (h2c in
 * cleartext); gRPC-Web and Connect use HTTP/1.1 like browsers and curl,
 * except that `bidi` asks for HTTP/2 (the Connect protocol can stream both
 * ways only there).
 */
export function createTransport(
  endpoint: Endpoint,
  protocol: Protocol,
  interceptors: Interceptor[],
  options: { bidi?: boolean } = {},
): Transport {
  const tlsOptions = endpoint.tls
    ? {
        ...(endpoint.ca ? { ca: endpoint.ca } : {}),
        ...(endpoint.insecure ? { rejectUnauthorized: false } : {}),
      }
    : {};
  const baseUrl = endpoint.baseUrl;
  switch (protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors, nodeOptions: tlsOptions });
    case "grpc-web":
      return createGrpcWebTransport({
        baseUrl,
        httpVersion: "1.1",
        interceptors,
        nodeOptions: tlsOptions,
      });
    case "connect":
      return options.bidi
        ? createConnectTransport({
            baseUrl,
            httpVersion: "2",
            interceptors,
            nodeOptions: tlsOptions,
          })
        : createConnectTransport({
            baseUrl,
            httpVersion: "1.1",
            interceptors,
            nodeOptions: tlsOptions,
          });
  }
}

/** A typed client over a transport. */
export function client<T extends DescService>(service: T, transport: Transport): Client<T> {
  return createClient(service, transport);
}
