import { Redis, type RedisOptions } from "ioredis";
import type { Bus, BusEvent, BusListener } from "./bus.js";

/**
 * The chat bus over Redis pub/sub, for several server instances sharing one
 * Redis: one channel per room (`<prefix><room>`), JSON-encoded {@link BusEvent}s.
 *
 * Two connections: a publisher and a subscriber (a connection in subscribe
 * mode can do nothing else). Events reach every subscriber of the room,
 * including this instance's own (through Redis, like any other).
 *
 * Delivery is best-effort, as bus.ts allows (the store is the truth):
 * - `publish` never rejects and never waits for a connection. While the
 *   publisher is not connected, or when Redis refuses or times out, the
 *   failure is logged and the event kept as pending (only the newest per
 *   room for "message", per room and user for "joined"/"left"), to be
 *   published when the publisher is ready again. So a quiet room still hears
 *   about its last message after an outage.
 * - The subscriber reconnects by itself and ioredis re-subscribes its
 *   channels (autoResubscribe). Once that is confirmed, `onResync` listeners
 *   run, since events published meanwhile were lost: hubs re-read the store.
 */

/** The logging surface the bus needs; a pino logger satisfies it. */
export interface RedisBusLogger {
  warn(obj: object, msg: string): void;
}

/** Options for {@link RedisBus}. */
export interface RedisBusOptions {
  /** Prepended to the room to make its channel. Default "switchboard:chat:". */
  readonly channelPrefix?: string;
  readonly logger?: RedisBusLogger;
  /**
   * `CLIENT SETNAME` of the connections: `<name>:pub` and `<name>:sub`
   * (handy in `CLIENT LIST`). Default: unnamed.
   */
  readonly connectionName?: string;
  /** How long one PUBLISH may take before it counts as failed. Default 2000 ms. */
  readonly publishTimeoutMs?: number;
}

/** The default channel prefix. */
export const DEFAULT_CHANNEL_PREFIX = "switchboard:chat:";

export class RedisBus implements Bus {
  readonly #prefix: string;
  readonly #logger: RedisBusLogger | undefined;
  readonly #publisher: Redis;
  readonly #subscriber: Redis;
  readonly #rooms = new Map<string, Set<BusListener>>();
  readonly #resyncListeners = new Set<() => void>();
  /** Events whose publish failed, by supersession key (see {@link pendingKey}). */
  readonly #pending = new Map<string, BusEvent>();
  /** The subscriber has been ready at least once. */
  #subscriberWasReady = false;
  /** The subscriber lost its connection after having been ready. */
  #subscriberLost = false;
  /** Warn once per outage, not once per failed command or reconnect attempt. */
  #publisherWarned = false;
  #subscriberWarned = false;
  #closing: Promise<void> | undefined;

  /**
   * @param redis a Redis URL (`redis://…`, `rediss://…`) or ioredis options,
   *   used for both connections (the options this class needs override them).
   */
  constructor(redis: string | RedisOptions, options: RedisBusOptions = {}) {
    this.#prefix = options.channelPrefix ?? DEFAULT_CHANNEL_PREFIX;
    this.#logger = options.logger;
    const name = options.connectionName;
    this.#publisher = connect(redis, {
      // Fail at once while disconnected instead of queueing: publish is
      // best-effort and keeps its own (superseding) pending events.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: options.publishTimeoutMs ?? 2000,
      ...(name === undefined ? {} : { connectionName: `${name}:pub` }),
    });
    this.#subscriber = connect(redis, {
      // SUBSCRIBE/UNSUBSCRIBE issued while disconnected wait for the
      // connection, however long that takes, and keep their order.
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      autoResubscribe: true,
      ...(name === undefined ? {} : { connectionName: `${name}:sub` }),
    });

    this.#publisher.on("error", (err: unknown) => {
      if (!this.#publisherWarned) {
        this.#publisherWarned = true;
        this.#logger?.warn({ err }, "chat bus: Redis publisher connection failed");
      }
    });
    this.#publisher.on("ready", () => {
      this.#publisherWarned = false;
      this.#flushPending();
    });

    this.#subscriber.on("error", (err: unknown) => {
      if (!this.#subscriberWarned) {
        this.#subscriberWarned = true;
        this.#logger?.warn({ err }, "chat bus: Redis subscriber connection failed");
      }
    });
    this.#subscriber.on("close", () => {
      if (this.#subscriberWasReady) {
        this.#subscriberLost = true;
      }
    });
    this.#subscriber.on("ready", () => this.#onSubscriberReady());
    this.#subscriber.on("message", (channel: string, payload: string) =>
      this.#onMessage(channel, payload),
    );
  }

  /** Never rejects: failures are logged and the event kept for the next connection. */
  async publish(event: BusEvent): Promise<void> {
    if (this.#closing !== undefined) {
      return;
    }
    const key = pendingKey(event);
    if (this.#publisher.status !== "ready") {
      this.#keepPending(key, event);
      return;
    }
    try {
      await this.#publisher.publish(this.#channel(event.room), JSON.stringify(event));
      // A pending event this one supersedes need not be sent any more.
      const pending = this.#pending.get(key);
      if (pending !== undefined && !isNewer(pending, event)) {
        this.#pending.delete(key);
      }
    } catch (err) {
      this.#logger?.warn(
        { err, room: event.room, kind: event.kind },
        "chat bus: publish failed; will retry when Redis is back",
      );
      this.#keepPending(key, event);
    }
  }

  subscribe(room: string, listener: BusListener): () => void {
    if (this.#closing !== undefined) {
      return () => undefined;
    }
    let listeners = this.#rooms.get(room);
    if (listeners === undefined) {
      listeners = new Set();
      this.#rooms.set(room, listeners);
      this.#subscriber.subscribe(this.#channel(room)).catch((err: unknown) => {
        this.#logger?.warn({ err, room }, "chat bus: SUBSCRIBE failed");
      });
    }
    // Each call is its own subscription, even with the same function.
    const entry: BusListener = (event) => listener(event);
    listeners.add(entry);
    let active = true;
    return () => {
      if (!active) {
        return;
      }
      active = false;
      listeners.delete(entry);
      if (listeners.size === 0 && this.#rooms.get(room) === listeners) {
        this.#rooms.delete(room);
        if (this.#closing === undefined) {
          this.#subscriber.unsubscribe(this.#channel(room)).catch((err: unknown) => {
            this.#logger?.warn({ err, room }, "chat bus: UNSUBSCRIBE failed");
          });
        }
      }
    };
  }

  onResync(listener: () => void): () => void {
    const entry = () => listener();
    this.#resyncListeners.add(entry);
    return () => {
      this.#resyncListeners.delete(entry);
    };
  }

  /** Quits both connections (waiting at most a second for a clean QUIT). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#rooms.clear();
      this.#resyncListeners.clear();
      this.#pending.clear();
      await Promise.all([shutdown(this.#publisher), shutdown(this.#subscriber)]);
    })();
    return this.#closing;
  }

  #channel(room: string): string {
    return `${this.#prefix}${room}`;
  }

  #keepPending(key: string, event: BusEvent): void {
    const pending = this.#pending.get(key);
    if (pending === undefined || isNewer(event, pending)) {
      this.#pending.set(key, event);
    }
  }

  #flushPending(): void {
    if (this.#closing !== undefined) {
      return;
    }
    const events = [...this.#pending.values()];
    this.#pending.clear();
    for (const event of events) {
      // publish() puts it back if it fails again.
      void this.publish(event);
    }
  }

  /**
   * "ready" is emitted on the tick after ioredis sent the automatic
   * re-SUBSCRIBE, so a SUBSCRIBE of every room with listeners sent now is
   * answered after it: once it succeeds, every room is listened to again
   * (also any whose SUBSCRIBE never got through), and hubs may re-read.
   */
  #onSubscriberReady(): void {
    this.#subscriberWarned = false;
    const again = this.#subscriberWasReady && this.#subscriberLost;
    this.#subscriberWasReady = true;
    this.#subscriberLost = false;
    if (!again || this.#closing !== undefined) {
      return;
    }
    const channels = [...this.#rooms.keys()].map((room) => this.#channel(room));
    const confirmed =
      channels.length > 0 ? this.#subscriber.subscribe(...channels) : this.#subscriber.ping();
    confirmed.then(
      () => this.#emitResync(),
      (err: unknown) => {
        // Lost again before confirming: the next "ready" tries again.
        this.#logger?.warn({ err }, "chat bus: re-subscribing after a reconnect failed");
      },
    );
  }

  #emitResync(): void {
    if (this.#closing !== undefined) {
      return;
    }
    for (const listener of [...this.#resyncListeners]) {
      try {
        listener();
      } catch (err) {
        this.#logger?.warn({ err }, "chat bus: a resync listener threw");
      }
    }
  }

  #onMessage(channel: string, payload: string): void {
    if (!channel.startsWith(this.#prefix)) {
      return;
    }
    const room = channel.slice(this.#prefix.length);
    const listeners = this.#rooms.get(room);
    if (listeners === undefined) {
      return;
    }
    const event = parseEvent(payload, room);
    if (event === undefined) {
      this.#logger?.warn(
        { room, payload: payload.slice(0, 200) },
        "chat bus: ignored a malformed event",
      );
      return;
    }
    for (const listener of [...listeners]) {
      try {
        listener(event);
      } catch (err) {
        this.#logger?.warn({ err, room }, "chat bus: a listener threw");
      }
    }
  }
}

function connect(redis: string | RedisOptions, options: RedisOptions): Redis {
  // Reconnect attempts at most half a second apart: after a Redis restart,
  // wake-ups (and the resync that repairs what was missed) resume quickly.
  const overrides: RedisOptions = {
    retryStrategy: (times) => Math.min(times * 50, 500),
    ...options,
  };
  return typeof redis === "string"
    ? new Redis(redis, overrides)
    : new Redis({ ...redis, ...overrides });
}

/** A clean QUIT when connected (bounded), then a hard disconnect either way. */
export async function shutdown(redis: Redis, timeoutMs = 1000): Promise<void> {
  if (redis.status === "ready") {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      redis.quit().catch(() => undefined),
      new Promise((resolve) => {
        timer = setTimeout(resolve, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }
  redis.disconnect();
}

/** Events with the same key supersede each other (the newer one says it all). */
function pendingKey(event: BusEvent): string {
  return event.kind === "message"
    ? `m\u0000${event.room}`
    : `p\u0000${event.room}\u0000${event.userId}`;
}

/** Whether `a` supersedes `b` (same key): a later message id, or any later presence event. */
function isNewer(a: BusEvent, b: BusEvent): boolean {
  if (a.kind === "message" && b.kind === "message") {
    return a.lastId > b.lastId;
  }
  return true;
}

/** Decodes and checks a payload received on `room`'s channel; undefined if malformed. */
export function parseEvent(payload: string, room: string): BusEvent | undefined {
  let value: unknown;
  try {
    value = JSON.parse(payload);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null) {
    return undefined;
  }
  const v = value as Record<string, unknown>;
  if (v.room !== room) {
    return undefined;
  }
  if (v.kind === "message") {
    const lastId = v.lastId;
    if (typeof lastId !== "number" || !Number.isSafeInteger(lastId) || lastId < 0) {
      return undefined;
    }
    return { kind: "message", room, lastId };
  }
  if (v.kind === "joined" || v.kind === "left") {
    if (typeof v.userId !== "string" || typeof v.username !== "string") {
      return undefined;
    }
    return { kind: v.kind, room, userId: v.userId, username: v.username };
  }
  return undefined;
}
