import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { CallOptions, ChatMessageRecord, NewChatMessage, Store } from "../storage/store.js";
import type { Bus, BusEvent } from "./bus.js";
import { hubClosed, subscriberTooSlow } from "./errors.js";
import { EventQueue } from "./event-queue.js";
import type { Member, PresenceTracker } from "./presence.js";

/**
 * The chat hub: this process's fan-out of room events to its subscribers.
 *
 * The store is the source of truth; the bus only wakes. Every room with at
 * least one local subscriber has one feed, which knows `lastId`, the highest
 * message id it has handed to its subscribers. When it learns of a newer
 * message (a bus "message" event, a local append, a bus resync) it reads
 * `listMessagesAfter(room, lastId)` ONCE and pushes every message into every
 * subscriber's queue: fan-out to N subscribers costs one store read, not N.
 * Reads are single-flight per room: wakes that arrive during a read are
 * coalesced into at most one more read (none if the running read already
 * covered the id they announce).
 *
 * A subscription yields, in order and with no gap and no duplicate:
 * 1. a presence snapshot (who is in the room; includes the subscriber's own
 *    member once it joined);
 * 2. with `afterId` set, every stored message after it (catch-up, paged and
 *    pulled at the consumer's pace);
 * 3. live events: messages and joined/left presence changes.
 * The subscriber registers with the feed BEFORE it reads anything, noting
 * the feed's `lastId` at that moment as its `start`: every later message
 * reaches its queue, however slowly it is consumed. Catch-up reads the store
 * from `afterId` up to `start`, then the queue is drained skipping message
 * ids already delivered. Without `afterId` the subscription starts after
 * `start` (what was stored before it subscribed is History's business).
 *
 * Presence events are delivered to every subscriber of the room, the one
 * whose join or leave caused them included (its own "joined" arrives after
 * the snapshot that already lists it). Clients treat joined/left as set
 * operations on top of the snapshot. After a bus resync every subscriber
 * gets a fresh presence snapshot, since joined/left events may have been
 * lost. When the presence tracker re-announces this instance's connections
 * after an outage (a restarted Redis lost every key), the hub publishes a
 * "joined" for each of its members, so every instance's lists are whole
 * again, and sends its own subscribers a fresh snapshot.
 *
 * Each subscriber's queue of live events is bounded (`subscriberBuffer`):
 * the event that would exceed it ends that subscriber with ResourceExhausted
 * SUBSCRIBER_TOO_SLOW (metadata `last_id`: the last message id the consumer
 * was given) and drops its queue at once. Pushing never waits for a
 * consumer, so one slow subscriber never delays the others. A feed's live
 * page size is at most `subscriberBuffer`, so one burst alone never cuts off
 * a subscriber that keeps up.
 */

/** What a subscription yields (the service turns it into proto). */
export type HubEvent =
  | {
      readonly kind: "presence";
      readonly room: string;
      readonly members: readonly Member[];
      /**
       * On a subscription's first event only: the id its messages start
       * after (the effective cursor; a resume point even if no message is
       * ever delivered). Absent on the refreshed snapshots sent after a bus
       * resync.
       */
      readonly afterId?: number;
    }
  | { readonly kind: "message"; readonly room: string; readonly message: ChatMessageRecord }
  | { readonly kind: "joined"; readonly room: string; readonly member: Member }
  | { readonly kind: "left"; readonly room: string; readonly member: Member };

/** What the hub needs. */
export interface HubOptions {
  readonly store: Store;
  readonly bus: Bus;
  readonly presence: PresenceTracker;
  /** Live events a subscriber may have queued and unread before it is cut off (config `chat.subscriberBuffer`). */
  readonly subscriberBuffer: number;
  readonly logger: Logger;
  /** Messages per store read (catch-up; live reads use at most `subscriberBuffer`); default 100. */
  readonly pageSize?: number;
  /** Presence connection ids; default random UUIDs (unique across processes). */
  readonly newConnectionId?: () => string;
  /**
   * A new feed reads the store once more this long after it started
   * (default 250 ms; 0: never). `Bus.subscribe` cannot say when a remote
   * bus (Redis SUBSCRIBE) really listens, and a message announced between
   * the feed's first read and that moment would otherwise wait for the
   * room's next announcement.
   */
  readonly settleCheckMs?: number;
}

/** One subscription's parameters. */
export interface SubscribeOptions {
  /**
   * Replay every stored message with a larger id first (0: every message
   * of the room). Undefined: no replay, live events only. A cursor beyond
   * the room's newest message is treated as the newest.
   */
  readonly afterId?: number | undefined;
  /** The subscribing user, counted in presence while subscribed; none: an invisible watcher. */
  readonly member?: Member | undefined;
  /** Ends the subscription (the iterator then throws the signal's reason as a ConnectError). */
  readonly signal?: AbortSignal | undefined;
  /** Presence connection id; default `newConnectionId()`. */
  readonly connectionId?: string | undefined;
}

/** Counters for tests and metrics. */
export interface HubStats {
  /** Rooms with a feed (at least one local subscriber). */
  readonly rooms: number;
  readonly subscribers: number;
  /** Live events queued and not yet taken, over every subscriber. */
  readonly queued: number;
  /** Store reads made by feeds for live fan-out (catch-up reads not counted). */
  readonly liveReads: number;
}

const DEFAULT_PAGE_SIZE = 100;
const RETRY_MIN_MS = 100;
const RETRY_MAX_MS = 5_000;

/** One subscription's state. */
class Subscriber {
  /** Live events, in order. */
  readonly queue = new EventQueue<HubEvent>();
  /** Id of the last message yielded to the consumer. */
  given: number;
  /**
   * The feed's `lastId` when this subscriber was registered and the feed
   * ready: every later message reaches `queue`. Set by the feed.
   */
  start: number | undefined;
  /** Presence join was attempted, so a leave is owed. */
  joined = false;
  released = false;
  error: unknown;
  readonly #controller = new AbortController();
  readonly #ended: Promise<never>;
  #rejectEnded!: (err: unknown) => void;

  constructor(
    readonly room: string,
    readonly member: Member | undefined,
    readonly connectionId: string,
    readonly feed: Feed,
    afterId: number,
  ) {
    this.given = afterId;
    this.#ended = new Promise<never>((_, reject) => {
      this.#rejectEnded = reject;
    });
    this.#ended.catch(() => undefined);
  }

  /** Aborted when the subscription ends (cancels its store reads). */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  get ended(): boolean {
    return this.#controller.signal.aborted;
  }

  /** Ends it: drops the queue, wakes whatever it awaits with `error`. */
  finish(error: unknown): void {
    if (this.ended) return;
    this.error = error;
    this.queue.fail(error);
    this.#controller.abort(error);
    this.#rejectEnded(error);
  }

  /** Throws the end's error once ended. */
  check(): void {
    if (this.ended) throw this.error;
  }

  /** `promise`, unless the subscription ends first. */
  until<T>(promise: Promise<T>): Promise<T> {
    if (this.ended) return Promise.reject(this.error);
    return Promise.race([promise, this.#ended]);
  }
}

/** What a feed needs from its hub. */
interface FeedContext {
  readonly store: Store;
  readonly logger: Logger;
  readonly livePageSize: number;
  readonly subscriberBuffer: number;
  readonly settleCheckMs: number;
  /** Ends a subscriber (cut off, or the feed failed). */
  end(sub: Subscriber, error: ConnectError): void;
  /** The feed has no read running; the hub may drop it if it has no subscribers. */
  idle(feed: Feed): void;
  countRead(): void;
}

/** One room's fan-out in this process. */
class Feed {
  /** Highest message id pushed to subscribers; undefined until the first read. */
  lastId: number | undefined;
  readonly subs = new Set<Subscriber>();
  /** Resolves once `lastId` is known; rejects if that first read fails. */
  readonly ready: Promise<void>;
  reading = false;
  disposed = false;
  #resolveReady!: () => void;
  #rejectReady!: (err: unknown) => void;
  /** Highest message id announced (bus or local append). */
  #want = 0;
  /** A read was asked for without an id (resync, retry). */
  #forced = false;
  #failures = 0;
  #retryTimer: NodeJS.Timeout | undefined;
  #settleTimer: NodeJS.Timeout | undefined;
  readonly #unsubscribe: () => void;

  constructor(
    readonly room: string,
    readonly ctx: FeedContext,
    bus: Bus,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    this.ready.catch(() => undefined);
    this.#unsubscribe = bus.subscribe(room, (event) => this.#onBus(event));
  }

  /** Starts the first read (the room's newest id). */
  start(): void {
    void this.#run();
  }

  /** Asks for a read of messages up to `id` (or, without an id, of whatever is new). */
  wake(id?: number): void {
    if (this.disposed) return;
    if (id === undefined) this.#forced = true;
    else {
      if (this.lastId !== undefined && id <= this.lastId) return;
      if (id > this.#want) this.#want = id;
    }
    if (!this.reading) void this.#run();
  }

  /** Pushes an event into every subscriber's queue; cuts off those that are full. */
  deliver(event: HubEvent): void {
    for (const sub of this.subs) {
      if (sub.queue.size >= this.ctx.subscriberBuffer) {
        this.ctx.end(sub, subscriberTooSlow({ last_id: String(sub.given) }));
      } else {
        sub.queue.push(event);
      }
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.#unsubscribe();
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    if (this.#settleTimer) clearTimeout(this.#settleTimer);
    this.#retryTimer = undefined;
    this.#settleTimer = undefined;
  }

  #onBus(event: BusEvent): void {
    switch (event.kind) {
      case "message":
        this.wake(event.lastId);
        return;
      case "joined":
      case "left":
        this.deliver({
          kind: event.kind,
          room: this.room,
          member: { userId: event.userId, username: event.username },
        });
        return;
    }
  }

  async #run(): Promise<void> {
    this.reading = true;
    try {
      if (this.lastId === undefined) {
        let newest: number;
        try {
          newest = await this.ctx.store.lastMessageId(this.room);
        } catch (err) {
          // Nobody is live yet: every subscriber is waiting for `ready`.
          const error = ConnectError.from(err);
          this.#rejectReady(error);
          for (const sub of [...this.subs]) this.ctx.end(sub, error);
          return;
        }
        this.lastId = newest;
        for (const sub of this.subs) sub.start ??= newest;
        this.#resolveReady();
        if (this.ctx.settleCheckMs > 0 && !this.disposed) {
          this.#settleTimer = setTimeout(() => {
            this.#settleTimer = undefined;
            this.wake();
          }, this.ctx.settleCheckMs);
          this.#settleTimer.unref();
        }
      }
      while (!this.disposed && (this.#forced || this.#want > this.lastId)) {
        this.#forced = false;
        const before: number | undefined = this.lastId;
        const wanted = this.#want;
        await this.#readToEnd();
        // An announced id that is not readable (a bogus or stale bus
        // event) is forgotten instead of re-read forever.
        if (this.lastId === before && this.#want === wanted) this.#want = this.lastId;
      }
      this.#failures = 0;
    } catch (err) {
      this.#failures++;
      const delay = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (this.#failures - 1));
      this.ctx.logger.warn({ err, room: this.room, retryInMs: delay }, "chat feed read failed");
      if (!this.disposed) {
        this.#retryTimer = setTimeout(() => {
          this.#retryTimer = undefined;
          this.wake();
        }, delay);
        this.#retryTimer.unref();
      }
    } finally {
      this.reading = false;
      this.ctx.idle(this);
    }
  }

  /** Reads pages after `lastId` until a short page, pushing each message. */
  async #readToEnd(): Promise<void> {
    const pageSize = this.ctx.livePageSize;
    for (;;) {
      const page = await this.ctx.store.listMessagesAfter(this.room, this.lastId ?? 0, pageSize);
      this.ctx.countRead();
      if (this.disposed) return;
      for (const message of page) {
        if (message.id <= (this.lastId ?? 0)) continue;
        this.lastId = message.id;
        this.deliver({ kind: "message", room: this.room, message });
      }
      if (page.length < pageSize) return;
    }
  }
}

/** This process's chat fan-out; see the module comment. */
export class ChatHub {
  /** The bound of each subscriber's queue. */
  readonly subscriberBuffer: number;
  readonly #store: Store;
  readonly #bus: Bus;
  readonly #presence: PresenceTracker;
  readonly #logger: Logger;
  readonly #pageSize: number;
  readonly #newConnectionId: () => string;
  readonly #feeds = new Map<string, Feed>();
  readonly #pendingLeaves = new Set<Promise<void>>();
  readonly #ctx: FeedContext;
  readonly #unsubscribeResync: () => void;
  readonly #unsubscribeRestored: () => void;
  #liveReads = 0;
  #closed = false;

  constructor(options: HubOptions) {
    if (!Number.isSafeInteger(options.subscriberBuffer) || options.subscriberBuffer < 1) {
      throw new RangeError("subscriberBuffer must be a positive integer");
    }
    this.#store = options.store;
    this.#bus = options.bus;
    this.#presence = options.presence;
    this.#logger = options.logger;
    this.#pageSize = options.pageSize ?? DEFAULT_PAGE_SIZE;
    this.#newConnectionId = options.newConnectionId ?? randomUUID;
    this.subscriberBuffer = options.subscriberBuffer;
    this.#ctx = {
      store: this.#store,
      logger: this.#logger,
      livePageSize: Math.max(1, Math.min(this.#pageSize, options.subscriberBuffer)),
      subscriberBuffer: options.subscriberBuffer,
      settleCheckMs: options.settleCheckMs ?? 250,
      end: (sub, error) => this.#end(sub, error),
      idle: (feed) => this.#maybeDrop(feed),
      countRead: () => {
        this.#liveReads++;
      },
    };
    this.#unsubscribeResync = this.#bus.onResync(() => this.#resync());
    this.#unsubscribeRestored =
      this.#presence.onRestored?.(() => this.#reannounce()) ?? (() => undefined);
  }

  /**
   * Follows a room; see the module comment for what is yielded. Nothing
   * happens until the first `next()`. The iterator ends only by throwing a
   * ConnectError (cut off, aborted, hub closed, store failure) or by the
   * consumer's `return()`; either way the subscriber leaves the room's
   * presence and the feed.
   */
  subscribe(
    room: string,
    options: SubscribeOptions = {},
  ): AsyncGenerator<HubEvent, void, undefined> {
    return this.#subscription(room, options);
  }

  /**
   * Stores a message (idempotent on room, sender and client id; see
   * `Store.appendMessage`), wakes this process's feed of the room directly
   * and announces the id on the bus for the others (best effort: a lost
   * announcement costs other processes latency until the next one).
   */
  async append(
    message: NewChatMessage,
    options?: CallOptions,
  ): Promise<{ message: ChatMessageRecord; created: boolean }> {
    const result = await this.#store.appendMessage(message, options);
    const id = result.message.id;
    this.#feeds.get(message.room)?.wake(id);
    // Also for a repeat: should the first attempt's announcement have been
    // lost, this one repairs it (feeds ignore ids they already have).
    this.#publish({ kind: "message", room: message.room, lastId: id });
    return result;
  }

  /** Counters for tests and metrics. */
  stats(): HubStats {
    let subscribers = 0;
    let queued = 0;
    for (const feed of this.#feeds.values()) {
      subscribers += feed.subs.size;
      for (const sub of feed.subs) queued += sub.queue.size;
    }
    return { rooms: this.#feeds.size, subscribers, queued, liveReads: this.#liveReads };
  }

  /**
   * Ends every subscription with Unavailable and stops listening to the bus;
   * resolves once the presence leaves they owe are done. Idempotent. The
   * bus and presence tracker belong to the caller, who closes them after.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      this.#unsubscribeResync();
      this.#unsubscribeRestored();
      for (const feed of [...this.#feeds.values()]) {
        for (const sub of [...feed.subs]) this.#end(sub, hubClosed());
        feed.dispose();
      }
      this.#feeds.clear();
    }
    await Promise.allSettled([...this.#pendingLeaves]);
  }

  async *#subscription(room: string, options: SubscribeOptions): AsyncGenerator<HubEvent> {
    if (this.#closed) throw hubClosed();
    const { signal, member } = options;
    if (signal?.aborted) throw ConnectError.from(signal.reason);
    const feed = this.#feedFor(room);
    const sub = new Subscriber(
      room,
      member,
      options.connectionId ?? this.#newConnectionId(),
      feed,
      options.afterId ?? 0,
    );
    feed.subs.add(sub);
    // Registered before anything is read: every message after `start` will
    // reach the queue (if the feed does not know its lastId yet, it sets
    // `start` when it learns it).
    sub.start = feed.lastId;
    const onAbort = () => this.#end(sub, ConnectError.from(signal?.reason));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      // 1. Presence: join, then the snapshot (which then lists us).
      if (member) {
        sub.joined = true;
        try {
          const first = await sub.until(this.#presence.join(room, member, sub.connectionId));
          if (first) {
            this.#publish({
              kind: "joined",
              room,
              userId: member.userId,
              username: member.username,
            });
          }
        } catch (err) {
          sub.check();
          this.#logger.warn({ err, room }, "chat presence join failed");
        }
      }
      // Where this subscription's messages start: every message after
      // `start` reaches our queue, whatever the consumer's pace.
      await sub.until(feed.ready);
      const target = sub.start ?? 0;
      if (options.afterId === undefined || sub.given > target) sub.given = target;
      let members: Member[] = [];
      try {
        members = await sub.until(this.#presence.members(room));
      } catch (err) {
        sub.check();
        this.#logger.warn({ err, room }, "chat presence snapshot failed");
      }
      yield { kind: "presence", room, members, afterId: sub.given };
      sub.check();

      // 2. Catch-up, up to what the feed had when we were registered.
      while (sub.given < target) {
        const page = await sub.until(
          this.#store.listMessagesAfter(room, sub.given, this.#pageSize, { signal: sub.signal }),
        );
        for (const message of page) {
          if (message.id <= sub.given) continue;
          sub.given = message.id;
          yield { kind: "message", room, message };
          sub.check();
        }
        if (page.length < this.#pageSize) break;
      }

      // 3. Live.
      for (;;) {
        const next = await sub.queue.next();
        if (next.done) return;
        const event = next.value;
        if (event.kind === "message") {
          if (event.message.id <= sub.given) continue;
          sub.given = event.message.id;
        }
        yield event;
      }
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#end(sub, new ConnectError("subscription ended", Code.Canceled));
    }
  }

  #feedFor(room: string): Feed {
    let feed = this.#feeds.get(room);
    if (!feed) {
      feed = new Feed(room, this.#ctx, this.#bus);
      this.#feeds.set(room, feed);
      feed.start();
    }
    return feed;
  }

  /** Ends a subscriber and releases what it holds. Idempotent. */
  #end(sub: Subscriber, error: ConnectError): void {
    if (sub.released) return;
    sub.released = true;
    sub.finish(error);
    sub.feed.subs.delete(sub);
    this.#maybeDrop(sub.feed);
    if (sub.joined && sub.member) this.#leave(sub.room, sub.member, sub.connectionId);
  }

  /** Drops a feed with no subscribers, once no read of it is running (reads stay single-flight). */
  #maybeDrop(feed: Feed): void {
    if (feed.subs.size > 0 || feed.reading) return;
    feed.dispose();
    if (this.#feeds.get(feed.room) === feed) this.#feeds.delete(feed.room);
  }

  #leave(room: string, member: Member, connectionId: string): void {
    const leaving = (async () => {
      try {
        if (await this.#presence.leave(room, member, connectionId)) {
          this.#publish({ kind: "left", room, userId: member.userId, username: member.username });
        }
      } catch (err) {
        this.#logger.warn({ err, room }, "chat presence leave failed");
      }
    })();
    this.#pendingLeaves.add(leaving);
    void leaving.finally(() => this.#pendingLeaves.delete(leaving));
  }

  #publish(event: BusEvent): void {
    this.#bus.publish(event).catch((err: unknown) => {
      this.#logger.warn({ err, room: event.room, kind: event.kind }, "chat bus publish failed");
    });
  }

  /**
   * The presence tracker wrote this instance's connections again after an
   * outage (which may have lost every other instance's too, until they do
   * the same): tell every instance who is here with "joined" events (set
   * operations for clients, so harmless when already known), and refresh
   * this instance's subscribers' snapshots, which now include whoever was
   * re-announced before.
   */
  #reannounce(): void {
    for (const feed of this.#feeds.values()) {
      const members = new Map<string, Member>();
      for (const sub of feed.subs) {
        if (sub.joined && sub.member) members.set(sub.member.userId, sub.member);
      }
      for (const member of members.values()) {
        this.#publish({
          kind: "joined",
          room: feed.room,
          userId: member.userId,
          username: member.username,
        });
      }
      this.#refreshPresence(feed);
    }
  }

  /** The bus reconnected: events may be lost, so re-read every room and refresh presence. */
  #resync(): void {
    for (const feed of this.#feeds.values()) {
      feed.wake();
      this.#refreshPresence(feed);
    }
  }

  /** Delivers a fresh presence snapshot of the feed's room to its subscribers. */
  #refreshPresence(feed: Feed): void {
    this.#presence.members(feed.room).then(
      (members) => {
        if (!feed.disposed) feed.deliver({ kind: "presence", room: feed.room, members });
      },
      (err: unknown) => this.#logger.warn({ err, room: feed.room }, "chat presence refresh failed"),
    );
  }
}
