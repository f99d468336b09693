import { Redis } from "ioredis";
import type { Logger } from "pino";
import { shutdown } from "../chat/redis-bus.js";
import {
  LocalRevokedSessions,
  type RevokedSessions,
  type RevokedSessionsOptions,
} from "./revoked-sessions.js";

/** Sorted set of revoked ids, scored by when they may be forgotten (ms since the epoch). */
export const REVOKED_SESSIONS_KEY = "switchboard:revoked-sessions";

/** Channel on which every revocation is announced to the other instances. */
export const REVOKED_SESSIONS_CHANNEL = "switchboard:revoked-sessions";

/** Options for {@link RedisRevokedSessions.open}. */
export interface RedisRevokedSessionsOptions extends RevokedSessionsOptions {
  /** The command connection (shared with the rate limiter). */
  readonly redis: Redis;
  /** Where the subscriber connects (a connection in subscribe mode does nothing else). */
  readonly url: string;
  readonly logger: Logger;
  readonly connectionName?: string;
}

interface Announcement {
  readonly ids: readonly string[];
  readonly until: number;
}

/**
 * Revocations shared by every instance through Redis. Each instance keeps
 * the whole list in memory (checked synchronously on every call); a
 * revocation is written to a sorted set, so instances that start or
 * reconnect later load it, and published, so running instances learn it
 * within milliseconds. While Redis is away a revocation still applies on
 * the instance that made it (and is logged); the others learn it only from
 * the sorted set, if the write got through.
 */
export class RedisRevokedSessions implements RevokedSessions {
  readonly #local: LocalRevokedSessions;
  readonly #redis: Redis;
  readonly #subscriber: Redis;
  readonly #logger: Logger;
  #closing: Promise<void> | undefined;

  private constructor(options: RedisRevokedSessionsOptions) {
    this.#local = new LocalRevokedSessions(options);
    this.#redis = options.redis;
    this.#logger = options.logger;
    this.#subscriber = new Redis(options.url, {
      enableOfflineQueue: true,
      maxRetriesPerRequest: null,
      autoResubscribe: true,
      ...(options.connectionName ? { connectionName: `${options.connectionName}:revoked` } : {}),
    });
    this.#subscriber.on("error", (err: unknown) =>
      this.#logger.warn({ err }, "revoked sessions: Redis subscriber connection error"),
    );
    this.#subscriber.on("message", (_channel: string, payload: string) => this.#onMessage(payload));
    // After a reconnect, whatever was announced meanwhile is in the set.
    this.#subscriber.on("ready", () => void this.#load());
  }

  /** Subscribes and loads the current list (best effort: a Redis outage is logged, not fatal). */
  static async open(options: RedisRevokedSessionsOptions): Promise<RedisRevokedSessions> {
    const revoked = new RedisRevokedSessions(options);
    await revoked.#subscriber.subscribe(REVOKED_SESSIONS_CHANNEL).catch((err: unknown) => {
      options.logger.warn({ err }, "revoked sessions: cannot subscribe");
    });
    await revoked.#load();
    return revoked;
  }

  has(id: string): boolean {
    return this.#local.has(id);
  }

  async revoke(ids: readonly string[]): Promise<void> {
    const until = this.#local.expiryFromNow();
    this.#local.remember(ids, until);
    const members = ids.flatMap((id) => [until, id]);
    try {
      await this.#redis
        .multi()
        .zadd(REVOKED_SESSIONS_KEY, ...members)
        .zremrangebyscore(REVOKED_SESSIONS_KEY, "-inf", Date.now())
        .publish(REVOKED_SESSIONS_CHANNEL, JSON.stringify({ ids, until } satisfies Announcement))
        .exec();
    } catch (err) {
      this.#logger.warn({ err, ids }, "revoked sessions: cannot share a revocation through Redis");
    }
  }

  close(): Promise<void> {
    this.#closing ??= shutdown(this.#subscriber);
    return this.#closing;
  }

  #onMessage(payload: string): void {
    try {
      const { ids, until } = JSON.parse(payload) as Announcement;
      if (Array.isArray(ids) && typeof until === "number") {
        this.#local.remember(
          ids.filter((id): id is string => typeof id === "string"),
          until,
        );
      }
    } catch (err) {
      this.#logger.warn({ err }, "revoked sessions: unreadable announcement ignored");
    }
  }

  async #load(): Promise<void> {
    try {
      const entries = await this.#redis.zrangebyscore(
        REVOKED_SESSIONS_KEY,
        Date.now(),
        "+inf",
        "WITHSCORES",
      );
      for (let i = 0; i + 1 < entries.length; i += 2) {
        this.#local.remember([entries[i]!], Number(entries[i + 1]));
      }
    } catch (err) {
      this.#logger.warn({ err }, "revoked sessions: cannot load the list from Redis");
    }
  }
}
