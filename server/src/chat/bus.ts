/**
 * The chat bus wakes the processes that serve a room. It carries no message
 * bodies: the store is the source of truth, and a hub that hears "room R has
 * a message up to id N" reads what it has not seen from the store, so a lost
 * or reordered bus message costs latency, never a message.
 *
 * Two implementations: in-process (the default, one server) and Redis
 * pub/sub (`redis-bus.ts`, when REDIS_URL is set, for many instances).
 */

/** What travels on the bus. */
export type BusEvent =
  /** Messages up to `lastId` are stored in `room`. */
  | { readonly kind: "message"; readonly room: string; readonly lastId: number }
  /** A user's first connection (anywhere) joined `room`. */
  | {
      readonly kind: "joined";
      readonly room: string;
      readonly userId: string;
      readonly username: string;
    }
  /** A user's last connection (anywhere) left `room`. */
  | {
      readonly kind: "left";
      readonly room: string;
      readonly userId: string;
      readonly username: string;
    };

/** A subscription's listener. */
export type BusListener = (event: BusEvent) => void;

/** Publish/subscribe per room. */
export interface Bus {
  /** Sends `event` to every subscriber of `event.room`, in every process. */
  publish(event: BusEvent): Promise<void>;
  /** Listens to one room; returns the function that stops listening. */
  subscribe(room: string, listener: BusListener): () => void;
  /**
   * Called after the bus lost its connection and got it back: events may
   * have been missed, so hubs re-read the store. Returns an unsubscribe.
   */
  onResync(listener: () => void): () => void;
  /** Stops everything. Idempotent. */
  close(): Promise<void>;
}

/** The in-process bus: a map of room → listeners. */
export class LocalBus implements Bus {
  readonly #rooms = new Map<string, Set<BusListener>>();

  async publish(event: BusEvent): Promise<void> {
    for (const listener of this.#rooms.get(event.room) ?? []) listener(event);
  }

  subscribe(room: string, listener: BusListener): () => void {
    let listeners = this.#rooms.get(room);
    if (!listeners) {
      listeners = new Set();
      this.#rooms.set(room, listeners);
    }
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
      if (listeners.size === 0) this.#rooms.delete(room);
    };
  }

  onResync(): () => void {
    // Nothing is ever lost in-process.
    return () => undefined;
  }

  async close(): Promise<void> {
    this.#rooms.clear();
  }
}
