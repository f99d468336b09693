import type { DescMessage, DescMethod, DescService } from "@bufbuild/protobuf";
import {
  type ConnectRouter,
  type ConnectRouterOptions,
  createConnectRouter,
  createServiceImplSpec,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import {
  createMethodSerializationLookup,
  type MethodSerializationLookup,
  type UniversalHandler,
} from "@connectrpc/connect/protocol";
import type { StreamRoute } from "./grpc-server-stream.js";

/**
 * THE route table: built from the same `routes(router)` function that
 * connect-fastify is given, through a recording router. The router is
 * connect's own (`createConnectRouter` with the engine's options), so every
 * path gets connect's universal handler — the driver for every protocol and
 * call kind — and the recording keeps each service's implementation, from
 * which the unary drivers get connect's implementation spec and
 * serialization (with the same `jsonOptions`, `binaryOptions` and limits).
 */

/** One served method. */
export interface Route {
  readonly path: string;
  readonly method: DescMethod;
  readonly service: DescService;
  /** connect's universal handler for this method (all three protocols). */
  readonly handler: UniversalHandler;
  /** The implementation spec, for unary methods (what the unary drivers run). */
  readonly unary: UnaryRoute | undefined;
  /** The implementation spec, for server-streaming methods (the gRPC stream driver). */
  readonly serverStream: StreamRoute | undefined;
}

/** What the unary drivers need of a unary method. */
export interface UnaryRoute {
  readonly spec: MethodImplSpec & { kind: "unary" };
  readonly method: DescMethod;
  readonly service: DescService;
  /** connect's serializers (binary and JSON), limited to readMaxBytes / writeMaxBytes. */
  readonly serialization: MethodSerializationLookup<DescMessage, DescMessage>;
}

/** The options the routes are built with (those connect's handlers accept). */
export type RouteOptions = ConnectRouterOptions & {
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
};

/** Runs `routes` on a recording router and returns every served method by request path. */
export function buildRouteTable(
  routes: (router: ConnectRouter) => void,
  options: RouteOptions,
): ReadonlyMap<string, Route> {
  const real = createConnectRouter(options);
  const recorded: Array<{ service: DescService; impl: Partial<ServiceImpl<DescService>> }> = [];
  const recording: ConnectRouter = {
    get handlers() {
      return real.handlers;
    },
    service(service, impl, serviceOptions) {
      recorded.push({ service, impl: impl as Partial<ServiceImpl<DescService>> });
      real.service(service, impl, serviceOptions);
      return recording;
    },
    rpc() {
      // Single-method registration carries no service implementation to
      // record; Switchboard registers whole services only.
      throw new Error("the engine's router takes whole services (router.service), not router.rpc");
    },
  };
  routes(recording);

  const specs = new Map<string, MethodImplSpec>();
  for (const { service, impl } of recorded) {
    const serviceSpec = createServiceImplSpec(service, impl);
    for (const method of service.methods) {
      const spec = serviceSpec.methods[method.localName];
      if (spec) specs.set(`/${service.typeName}/${method.name}`, spec);
    }
  }
  const limits = { readMaxBytes: options.readMaxBytes, writeMaxBytes: options.writeMaxBytes };
  const table = new Map<string, Route>();
  for (const handler of real.handlers) {
    const spec = specs.get(handler.requestPath);
    const serialization =
      spec === undefined
        ? undefined
        : createMethodSerializationLookup(
            spec.method,
            options.binaryOptions,
            options.jsonOptions,
            limits,
          );
    table.set(handler.requestPath, {
      path: handler.requestPath,
      method: handler.method,
      service: handler.service,
      handler,
      unary:
        spec?.kind === "unary"
          ? {
              spec,
              method: spec.method,
              service: handler.service,
              serialization: serialization as MethodSerializationLookup<DescMessage, DescMessage>,
            }
          : undefined,
      serverStream:
        spec?.kind === "server_streaming" && serialization !== undefined
          ? {
              spec,
              method: spec.method,
              service: handler.service,
              input: serialization.getI(true),
              output: serialization.getO(true),
            }
          : undefined,
    });
  }
  return table;
}
