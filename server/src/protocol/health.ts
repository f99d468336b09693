import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type ServiceImpl } from "@connectrpc/connect";
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../../gen/health/v1/health_pb.js";
import { WakeSignal } from "../events/wake-signal.js";

export { ServingStatus };

/**
 * Serving status per service name, as `grpc.health.v1.Health` reports it.
 * The empty name stands for the whole server. Shutdown flips everything to
 * NOT_SERVING so load balancers stop sending new calls.
 *
 * A required dependency that is down (`setDependency(name, false)`, e.g. the
 * store) makes every known service, the server included, report NOT_SERVING
 * until it is back; the status set per service is kept underneath and
 * reported again once no dependency is down.
 */
export class HealthState {
  readonly #status = new Map<string, ServingStatus>();
  readonly #changed = new WakeSignal();
  /** Required dependencies currently down. */
  readonly #down = new Set<string>();

  /** Registers services as SERVING (the empty name, the server, is always present). */
  constructor(serviceNames: readonly string[]) {
    this.#status.set("", ServingStatus.SERVING);
    for (const name of serviceNames) this.#status.set(name, ServingStatus.SERVING);
  }

  /** The status of a service, or undefined when it is not known. */
  get(service: string): ServingStatus | undefined {
    const status = this.#status.get(service);
    if (status === undefined || this.#down.size === 0) return status;
    return ServingStatus.NOT_SERVING;
  }

  /**
   * Records whether a required dependency (e.g. "store") is reachable. While
   * any is down, every service reports NOT_SERVING; watchers see each change.
   */
  setDependency(name: string, up: boolean): void {
    if (up === !this.#down.has(name)) return;
    if (up) this.#down.delete(name);
    else this.#down.add(name);
    this.#changed.wake();
  }

  /** The required dependencies currently down (empty when all are up). */
  downDependencies(): string[] {
    return [...this.#down];
  }

  /** Sets the status of one known service (or the server, ""). */
  set(service: string, status: ServingStatus): void {
    if (this.#status.get(service) === status) return;
    this.#status.set(service, status);
    this.#changed.wake();
  }

  /** Marks every service NOT_SERVING; called when shutdown begins. */
  setAllNotServing(): void {
    for (const name of this.#status.keys()) this.set(name, ServingStatus.NOT_SERVING);
  }

  /** Every known service and its status. */
  entries(): IterableIterator<[string, ServingStatus]> {
    return [...this.#status.keys()]
      .map((name): [string, ServingStatus] => [name, this.get(name)!])
      [Symbol.iterator]();
  }

  /** Yields the status of `service` now and whenever it changes, until `signal` aborts. */
  async *watch(service: string, signal: AbortSignal): AsyncGenerator<ServingStatus> {
    let last: ServingStatus | undefined;
    for (;;) {
      const version = this.#changed.version;
      const status = this.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (status !== last) {
        last = status;
        yield status;
      }
      await this.#changed.waitAfter(version, signal);
    }
  }
}

const response = (status: ServingStatus): HealthCheckResponse =>
  create(HealthCheckResponseSchema, { status });

/** Registers `grpc.health.v1.Health` (Check, Watch, List) backed by `state`. */
export function registerHealth(router: ConnectRouter, state: HealthState): void {
  router.service(Health, healthService(state));
}

/**
 * The `grpc.health.v1.Health` implementation backed by `state` (what
 * `registerHealth` serves; the gRPC streaming fast path serves its Watch).
 */
export function healthService(state: HealthState): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const status = state.get(req.service);
      if (status === undefined) {
        throw new ConnectError(`unknown service "${req.service.slice(0, 200)}"`, Code.NotFound);
      }
      return response(status);
    },
    async *watch(req, context) {
      for await (const status of state.watch(req.service, context.signal)) {
        yield response(status);
      }
    },
    list() {
      return {
        statuses: Object.fromEntries(
          [...state.entries()].map(([name, status]) => [name, response(status)]),
        ),
      };
    },
  };
}
