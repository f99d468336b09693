import type { Bus } from "../chat/bus.js";
import type { Store } from "../storage/store.js";
import type { WakeSignal } from "./wake-signal.js";

/**
 * The bus topic of user registrations. Not a valid chat room name (rooms are
 * `a-z 0-9 - _`), so it never meets a room's channel.
 */
export const USERS_TOPIC = "$users";

/** The logging surface the feed needs; a pino logger satisfies it. */
export interface UserCreatedFeedLogger {
  warn(obj: object, msg: string): void;
}

/** Options for {@link UserCreatedFeed}. */
export interface UserCreatedFeedOptions {
  /** The chat bus (Redis pub/sub across instances, or in-process). */
  readonly bus: Bus;
  readonly store: Pick<Store, "lastUserSeq">;
  /** The signal WatchUsers streams wait on. */
  readonly signal: WakeSignal;
  readonly logger: UserCreatedFeedLogger;
  /**
   * While some stream waits, the store's newest seq is read this often
   * (default 500 ms): the bound on the delay when the bus is down or lost
   * an announcement.
   */
  readonly pollMs?: number;
}

/**
 * Makes WatchUsers live across instances. The store is the source of truth
 * (streams read users by seq); this only wakes them:
 * - a registration here wakes this process at once (UserService does) and
 *   is announced on the bus (`USERS_TOPIC`, a "message" event whose `lastId` is the user's seq),
 *   which wakes every other instance's streams;
 * - a bus resync (Redis came back: announcements may have been lost) wakes
 *   every stream;
 * - while streams wait, `lastUserSeq` is polled every `pollMs`, so a lost
 *   announcement or a bus outage costs at most that much delay.
 * Streams re-read from their own cursor, so a spurious or repeated wake-up
 * costs one query, never a duplicate, and a missed one only latency.
 */
export class UserCreatedFeed {
  readonly #bus: Bus;
  readonly #store: Pick<Store, "lastUserSeq">;
  readonly #signal: WakeSignal;
  readonly #logger: UserCreatedFeedLogger;
  readonly #timer: NodeJS.Timeout;
  readonly #unsubscribe: () => void;
  readonly #unsubscribeResync: () => void;
  /** The highest seq the streams were woken for. */
  #known = 0;
  #polling = false;
  #pollWarned = false;
  #closed = false;

  constructor(options: UserCreatedFeedOptions) {
    this.#bus = options.bus;
    this.#store = options.store;
    this.#signal = options.signal;
    this.#logger = options.logger;
    this.#unsubscribe = this.#bus.subscribe(USERS_TOPIC, (event) => {
      if (event.kind === "message") this.#saw(event.lastId);
    });
    this.#unsubscribeResync = this.#bus.onResync(() => this.#signal.wake());
    this.#timer = setInterval(() => void this.#poll(), options.pollMs ?? 500);
    this.#timer.unref();
  }

  /**
   * A user with this seq was stored here (and the caller already woke this
   * process's streams): announce it to the other instances.
   */
  announce(seq: number): void {
    if (this.#closed) return;
    // Known now, so the announcement's own echo wakes nobody a second time.
    if (seq > this.#known) this.#known = seq;
    this.#bus
      .publish({ kind: "message", room: USERS_TOPIC, lastId: seq })
      .catch((err: unknown) => this.#logger.warn({ err }, "user feed: announcement failed"));
  }

  /** Stops listening and polling. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    this.#unsubscribe();
    this.#unsubscribeResync();
  }

  #saw(seq: number): void {
    if (seq <= this.#known) return;
    this.#known = seq;
    this.#signal.wake();
  }

  async #poll(): Promise<void> {
    if (this.#closed || this.#polling || this.#signal.waiting === 0) return;
    this.#polling = true;
    try {
      this.#saw(await this.#store.lastUserSeq());
      this.#pollWarned = false;
    } catch (err) {
      // The store is away: health says so; streams wait for it like everyone.
      if (!this.#pollWarned) {
        this.#pollWarned = true;
        this.#logger.warn({ err }, "user feed: catch-up query failed");
      }
    } finally {
      this.#polling = false;
    }
  }
}
