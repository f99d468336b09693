import { rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { v7 as uuidv7 } from "uuid";
import { openStore } from "../storage/index.js";
import type { Store, UserRecord } from "../storage/store.js";
import { type Bus, type BusEvent, type BusListener, LocalBus } from "./bus.js";

/**
 * Test helpers shared by the chat tests (not used by the server): a real
 * SQLite store in a temp dir with users, a bus whose resync tests can
 * trigger, and a background collector of an async iterable.
 */

/** A fresh SQLite store in a temp dir, with one user per name. */
export async function openChatTestStore(
  usernames: readonly string[],
): Promise<{ store: Store; users: UserRecord[]; cleanup(): Promise<void> }> {
  const dir = join(tmpdir(), `switchboard-chat-${process.pid}-${Date.now()}-${Math.random()}`);
  const store = await openStore({ dataDir: dir });
  const users: UserRecord[] = [];
  for (const username of usernames) {
    users.push(
      await store.createUser({
        id: uuidv7(),
        username,
        email: `${username}@example.com`,
        displayName: username,
        passwordHash: "not-a-hash",
        createTime: new Date(),
      }),
    );
  }
  return {
    store,
    users,
    async cleanup() {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * `store` with some methods replaced (the others are bound to the real
 * store, whose private fields a plain prototype copy could not reach).
 */
export function overrideStore(store: Store, overrides: Partial<Store>): Store {
  return new Proxy(store, {
    get(target, property) {
      if (Object.hasOwn(overrides, property)) return overrides[property as keyof Store];
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** A LocalBus whose "reconnected" moment tests trigger by hand. */
export class ResyncableBus implements Bus {
  readonly #local = new LocalBus();
  readonly #resync = new Set<() => void>();

  publish(event: BusEvent): Promise<void> {
    return this.#local.publish(event);
  }

  subscribe(room: string, listener: BusListener): () => void {
    return this.#local.subscribe(room, listener);
  }

  onResync(listener: () => void): () => void {
    this.#resync.add(listener);
    return () => this.#resync.delete(listener);
  }

  triggerResync(): void {
    for (const listener of this.#resync) listener();
  }

  close(): Promise<void> {
    return this.#local.close();
  }
}

/** Consumes `iterable` in the background. */
export interface Collected<T> {
  readonly items: T[];
  /** The error the iteration ended with, if any. */
  readonly error: unknown;
  readonly done: boolean;
  /** Settles when the iteration has ended (never rejects). */
  readonly finished: Promise<void>;
}

export function collect<T>(iterable: AsyncIterable<T>): Collected<T> {
  const items: T[] = [];
  let error: unknown;
  let done = false;
  const finished = (async () => {
    try {
      for await (const item of iterable) items.push(item);
    } catch (err) {
      error = err;
    } finally {
      done = true;
    }
  })();
  return {
    items,
    get error() {
      return error;
    },
    get done() {
      return done;
    },
    finished,
  };
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
