import type { HealthState } from "../protocol/health.js";
import type { Store } from "../storage/store.js";

/** The logging surface the probe needs; a pino logger satisfies it. */
export interface ProbeLogger {
  info(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Options for {@link startStoreProbe}. */
export interface StoreProbeOptions {
  readonly store: Pick<Store, "ping">;
  readonly health: HealthState;
  readonly logger: ProbeLogger;
  /** How often the store is pinged. Default 250 ms. */
  readonly intervalMs?: number;
  /** A ping slower than this counts as a failure. Default 500 ms. */
  readonly timeoutMs?: number;
  /** The dependency's name in `HealthState` and in log lines. Default "store". */
  readonly name?: string;
}

/** A running probe. */
export interface StoreProbe {
  /** Stops probing (the health state keeps its last value). Idempotent. */
  stop(): void;
}

/**
 * Pings the store (`select 1`) every `intervalMs` and tells `health` whether
 * it answers, so health reports NOT_SERVING within `intervalMs + timeoutMs`
 * of the store becoming unreachable and SERVING within `intervalMs` (plus a
 * reconnect) of its return. A ping that hangs counts as a failure once it is
 * older than `timeoutMs`; no second ping is sent while one is in flight, so
 * a hanging store costs one connection, not one per tick. Each transition is
 * logged once.
 */
export function startStoreProbe(options: StoreProbeOptions): StoreProbe {
  const { store, health, logger } = options;
  const intervalMs = options.intervalMs ?? 250;
  const timeoutMs = options.timeoutMs ?? 500;
  const name = options.name ?? "store";
  let up = true;
  let stopped = false;
  let inFlightSince: number | undefined;

  const report = (reachable: boolean, err?: unknown) => {
    if (stopped || reachable === up) return;
    up = reachable;
    health.setDependency(name, reachable);
    if (reachable) {
      logger.info({ dependency: name }, `${name} reachable again: health is SERVING`);
    } else {
      logger.error({ dependency: name, err }, `${name} unreachable: health is NOT_SERVING`);
    }
  };

  const tick = () => {
    if (inFlightSince !== undefined) {
      if (Date.now() - inFlightSince > timeoutMs) {
        report(false, new Error(`ping took longer than ${timeoutMs} ms`));
      }
      return;
    }
    inFlightSince = Date.now();
    store.ping().then(
      () => {
        const tookMs = Date.now() - (inFlightSince ?? Date.now());
        inFlightSince = undefined;
        report(tookMs <= timeoutMs);
      },
      (err: unknown) => {
        inFlightSince = undefined;
        report(false, err);
      },
    );
  };

  const timer = setInterval(tick, intervalMs);
  timer.unref();
  return {
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
}
