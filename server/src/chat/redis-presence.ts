import { ConnectError } from "@connectrpc/connect";
import { Redis, type RedisOptions } from "ioredis";
import { internal, unavailable } from "../errors.js";
import type { Member, PresenceTracker } from "./presence.js";
import { shutdown } from "./redis-bus.js";

/**
 * Presence shared by every server instance through Redis.
 *
 * Per room, three keys (under `<prefix>`, default "switchboard:presence:"):
 * - `conns:<room>`, a sorted set of connections `<userId>|<connectionId>`
 *   scored by when they were last seen (Redis server time, ms);
 * - `index:<room>`, the same members all scored 0, so a user's connections
 *   are one lexicographic range (`<userId>|…`);
 * - `names:<room>`, a hash connection → username.
 * (`|` and `%` in user ids are percent-escaped, so the first `|` always ends
 * the user id.)
 *
 * Every change is one Lua script, so check-and-change is atomic across
 * instances: of two concurrent first joins of a user, exactly one reports
 * true; of two concurrent last leaves, exactly one.
 *
 * Expiry: a connection is live while it was seen less than `ttlMs` ago
 * (default 30 s), by Redis's clock, so instance clocks do not matter; every
 * instance must use the same `ttlMs`. Each instance refreshes its own
 * connections every `heartbeatMs` (default ttl/3; the timer is unref'd), so a
 * live instance's connections stay live through two missed beats, and a
 * crashed (or stalled, or closed without `leave`) instance's connections
 * stop counting at most `ttlMs` after its last beat. Expired entries are
 * pruned lazily by the scripts (join, leave, heartbeat, members); no
 * "left" is reported for them, since no instance is told — hubs re-read
 * `members` (e.g. on a bus resync) to catch up. A heartbeat re-adds its
 * instance's connections that were pruned meanwhile (after a stall, or a
 * Redis restart without persistence), again without a "joined". Keys expire
 * 2 × ttl after the last join or heartbeat, so abandoned rooms vanish.
 *
 * Calls reject with a `ConnectError`: Unavailable when Redis cannot be
 * reached within `commandTimeoutMs` (nothing is queued for later), Internal
 * if Redis refuses a script.
 */

/** The logging surface presence needs; a pino logger satisfies it. */
export interface RedisPresenceLogger {
  warn(obj: object, msg: string): void;
}

/** Options for {@link RedisPresence}. */
export interface RedisPresenceOptions {
  /** Prefix of every key. Default "switchboard:presence:". */
  readonly keyPrefix?: string;
  /** How long a connection stays live without a heartbeat. Default 30 000 ms. */
  readonly ttlMs?: number;
  /** Heartbeat period; must be below `ttlMs`. Default `ttlMs / 3`. */
  readonly heartbeatMs?: number;
  /**
   * How long a call waits for a connection and then for Redis's answer
   * before failing with Unavailable. Default 2000 ms.
   */
  readonly commandTimeoutMs?: number;
  readonly logger?: RedisPresenceLogger;
  /** `CLIENT SETNAME` of the connection. Default: unnamed. */
  readonly connectionName?: string;
}

/** The default key prefix. */
export const DEFAULT_PRESENCE_PREFIX = "switchboard:presence:";

/**
 * Helpers shared by the scripts. KEYS: conns, index, names. Live means
 * score > now - ttl; everything at or below is expired.
 */
const PRELUDE = `
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function remove(list)
  for i = 1, #list, 500 do
    local chunk = {unpack(list, i, math.min(i + 499, #list))}
    redis.call('ZREM', KEYS[1], unpack(chunk))
    redis.call('ZREM', KEYS[2], unpack(chunk))
    redis.call('HDEL', KEYS[3], unpack(chunk))
  end
end
local function prune(now, ttl)
  remove(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl))
end
local function user_has_live(prefix, now, ttl)
  local list = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. prefix, '(' .. prefix .. '\\255')
  for _, m in ipairs(list) do
    local s = redis.call('ZSCORE', KEYS[1], m)
    if s and tonumber(s) > now - ttl then return true end
    if not s then
      redis.call('ZREM', KEYS[2], m)
      redis.call('HDEL', KEYS[3], m)
    end
  end
  return false
end
local function touch(now, member, username)
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('ZADD', KEYS[2], 0, member)
  redis.call('HSET', KEYS[3], member, username)
end
local function expire_keys(ttl)
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
end
local function drop_if_empty()
  if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) end
end
`;

/** ARGV: ttl, member, user prefix, username. 1 when the user had no live connection. */
const JOIN = `${PRELUDE}
local ttl = tonumber(ARGV[1])
local now = now_ms()
prune(now, ttl)
local first = not user_has_live(ARGV[3], now, ttl)
touch(now, ARGV[2], ARGV[4])
expire_keys(ttl)
if first then return 1 end
return 0
`;

/**
 * ARGV: ttl, member, user prefix. 1 when the connection was known (live or
 * expired but not yet pruned) and the user has no other live connection.
 */
const LEAVE = `${PRELUDE}
local ttl = tonumber(ARGV[1])
local now = now_ms()
local existed = redis.call('ZSCORE', KEYS[1], ARGV[2])
remove({ARGV[2]})
prune(now, ttl)
local last = existed and not user_has_live(ARGV[3], now, ttl)
drop_if_empty()
if last then return 1 end
return 0
`;

/** ARGV: ttl, then member, username pairs: marks them seen now (re-adding pruned ones). */
const HEARTBEAT = `${PRELUDE}
local ttl = tonumber(ARGV[1])
local now = now_ms()
prune(now, ttl)
for i = 2, #ARGV, 2 do touch(now, ARGV[i], ARGV[i + 1]) end
expire_keys(ttl)
return 1
`;

/** ARGV: ttl. Live connections, newest first, as member, username pairs. */
const MEMBERS = `${PRELUDE}
local ttl = tonumber(ARGV[1])
local now = now_ms()
prune(now, ttl)
local list = redis.call('ZREVRANGE', KEYS[1], 0, -1)
if #list == 0 then
  drop_if_empty()
  return {}
end
local out = {}
for i = 1, #list, 500 do
  local chunk = {unpack(list, i, math.min(i + 499, #list))}
  local names = redis.call('HMGET', KEYS[3], unpack(chunk))
  for j = 1, #chunk do
    if names[j] then
      out[#out + 1] = chunk[j]
      out[#out + 1] = names[j]
    end
  end
end
return out
`;

export class RedisPresence implements PresenceTracker {
  readonly #redis: Redis;
  readonly #prefix: string;
  readonly #ttlMs: number;
  readonly #timeoutMs: number;
  readonly #logger: RedisPresenceLogger | undefined;
  /** This instance's connections: room → member → username (what heartbeats refresh). */
  readonly #local = new Map<string, Map<string, string>>();
  readonly #timer: NodeJS.Timeout;
  readonly #restoredListeners = new Set<() => void>();
  #beating = false;
  #warned = false;
  /** The connection has been ready at least once. */
  #wasReady = false;
  /** The connection was lost after having been ready (an outage: fail fast). */
  #lost = false;
  #closing: Promise<void> | undefined;

  /**
   * @param redis a Redis URL or ioredis options; the instance opens (and on
   *   close quits) a connection of its own.
   */
  constructor(redis: string | RedisOptions, options: RedisPresenceOptions = {}) {
    this.#prefix = options.keyPrefix ?? DEFAULT_PRESENCE_PREFIX;
    this.#ttlMs = options.ttlMs ?? 30_000;
    const heartbeatMs = options.heartbeatMs ?? Math.max(1, Math.floor(this.#ttlMs / 3));
    if (!Number.isSafeInteger(this.#ttlMs) || this.#ttlMs <= 0) {
      throw new RangeError(`ttlMs must be a positive integer, got ${this.#ttlMs}`);
    }
    if (!(heartbeatMs > 0 && heartbeatMs < this.#ttlMs)) {
      throw new RangeError(`heartbeatMs must be in (0, ttlMs), got ${heartbeatMs}`);
    }
    this.#timeoutMs = options.commandTimeoutMs ?? 2000;
    this.#logger = options.logger;
    const overrides: RedisOptions = {
      // Nothing queued while disconnected: a join that "failed" must not
      // happen later behind the caller's back. Calls wait for the connection
      // themselves, bounded (see #ready).
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: this.#timeoutMs,
      // Reconnect attempts at most half a second apart, so a restarted
      // Redis is noticed (and presence re-announced) quickly.
      retryStrategy: (times) => Math.min(times * 50, 500),
      ...(options.connectionName === undefined ? {} : { connectionName: options.connectionName }),
    };
    this.#redis =
      typeof redis === "string"
        ? new Redis(redis, overrides)
        : new Redis({ ...redis, ...overrides });
    this.#redis.on("error", (err: unknown) => {
      if (!this.#warned) {
        this.#warned = true;
        this.#logger?.warn({ err }, "presence: Redis connection failed");
      }
    });
    this.#redis.on("close", () => {
      if (this.#wasReady) this.#lost = true;
    });
    this.#redis.on("ready", () => this.#onReady());
    this.#timer = setInterval(() => void this.#heartbeat(), heartbeatMs);
    this.#timer.unref();
  }

  /**
   * Also when Redis is away (the call then rejects): the connection is
   * remembered, so the re-announcement after Redis returns counts it.
   */
  async join(room: string, member: Member, connectionId: string): Promise<boolean> {
    const key = connectionKey(member.userId, connectionId);
    let conns = this.#local.get(room);
    if (conns === undefined) {
      conns = new Map();
      this.#local.set(room, conns);
    }
    conns.set(key, member.username);
    const first = await this.#eval(JOIN, room, key, userPrefix(member.userId), member.username);
    return first === 1;
  }

  async leave(room: string, member: Member, connectionId: string): Promise<boolean> {
    const key = connectionKey(member.userId, connectionId);
    // Forget it first, so no heartbeat brings it back.
    const conns = this.#local.get(room);
    conns?.delete(key);
    if (conns?.size === 0) {
      this.#local.delete(room);
    }
    const last = await this.#eval(LEAVE, room, key, userPrefix(member.userId));
    return last === 1;
  }

  async members(room: string): Promise<Member[]> {
    const flat = (await this.#eval(MEMBERS, room)) as string[];
    const byUser = new Map<string, Member>();
    // Newest connection first, so a renamed user shows their latest name.
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const userId = userIdOf(flat[i]!);
      if (!byUser.has(userId)) {
        byUser.set(userId, { userId, username: flat[i + 1]! });
      }
    }
    return [...byUser.values()].sort(
      (a, b) => a.username.localeCompare(b.username) || compare(a.userId, b.userId),
    );
  }

  /**
   * Listens for re-announcements: after the connection was lost and came
   * back (a Redis restart may have lost every key), this instance's
   * connections are written again at once and then `listener` runs, so hubs
   * can tell the other instances (and re-read `members`). Returns an
   * unsubscribe.
   */
  onRestored(listener: () => void): () => void {
    const entry = () => listener();
    this.#restoredListeners.add(entry);
    return () => {
      this.#restoredListeners.delete(entry);
    };
  }

  /**
   * Stops heartbeats and quits the connection. This instance's connections
   * are not removed: call `leave` for each first for a clean exit; otherwise
   * they expire after `ttlMs`. Idempotent.
   */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#timer);
      this.#local.clear();
      await shutdown(this.#redis);
    })();
    return this.#closing;
  }

  #onReady(): void {
    this.#warned = false;
    const again = this.#wasReady && this.#lost;
    this.#wasReady = true;
    this.#lost = false;
    if (!again || this.#closing !== undefined) return;
    void this.#heartbeat(true).then(() => {
      for (const listener of [...this.#restoredListeners]) {
        try {
          listener();
        } catch (err) {
          this.#logger?.warn({ err }, "presence: a restore listener threw");
        }
      }
    });
  }

  /**
   * Refreshes this instance's connections, one script per room. `force`
   * (the re-announcement after a reconnect) waits for a running beat.
   */
  async #heartbeat(force = false): Promise<void> {
    while (force && this.#beating) await new Promise((resolve) => setTimeout(resolve, 10));
    if (this.#beating || this.#closing !== undefined || this.#redis.status !== "ready") {
      return;
    }
    this.#beating = true;
    try {
      // Snapshot synchronously: a leave after this point is sent after the beat.
      const beats = [...this.#local].map(([room, conns]) =>
        this.#eval(HEARTBEAT, room, ...[...conns].flat()),
      );
      const results = await Promise.allSettled(beats);
      const failed = results.find((r) => r.status === "rejected");
      if (failed !== undefined && !this.#warned) {
        this.#warned = true;
        this.#logger?.warn({ err: failed.reason }, "presence: heartbeat failed");
      }
    } finally {
      this.#beating = false;
    }
  }

  /** Runs a script on the room's keys with ARGV = ttl, ...args. */
  async #eval(script: string, room: string, ...args: string[]): Promise<unknown> {
    if (this.#closing !== undefined) {
      throw unavailable("presence is closed");
    }
    try {
      await this.#ready();
      return await this.#redis.eval(
        script,
        3,
        `${this.#prefix}conns:${room}`,
        `${this.#prefix}index:${room}`,
        `${this.#prefix}names:${room}`,
        String(this.#ttlMs),
        ...args,
      );
    } catch (err) {
      throw translate(err);
    }
  }

  /**
   * Resolves once the connection is ready. Only the first connection is
   * waited for (at most the command timeout); once it has been lost, calls
   * fail at once until it is back, so nothing (a new subscription's history
   * included) waits on an outage.
   */
  #ready(): Promise<void> {
    const redis = this.#redis;
    if (redis.status === "ready") {
      return Promise.resolve();
    }
    if (redis.status === "end" || redis.status === "close" || this.#lost) {
      return Promise.reject(new Error(`Redis connection is ${redis.status}`));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        redis.off("ready", onReady);
        reject(new Error(`Redis not ready within ${this.#timeoutMs} ms (${redis.status})`));
      }, this.#timeoutMs);
      const onReady = () => {
        clearTimeout(timer);
        resolve();
      };
      redis.once("ready", onReady);
    });
  }
}

function translate(err: unknown): ConnectError {
  if (err instanceof ConnectError) {
    return err;
  }
  // Redis answered with an error: a bug (or a refused script), not an outage.
  if (err instanceof Error && err.name === "ReplyError") {
    return internal(err);
  }
  return unavailable("presence is unavailable", err);
}

function escapeUserId(userId: string): string {
  return userId.replace(/[%|]/g, (c) => (c === "%" ? "%25" : "%7C"));
}

function userPrefix(userId: string): string {
  return `${escapeUserId(userId)}|`;
}

function connectionKey(userId: string, connectionId: string): string {
  return `${userPrefix(userId)}${connectionId}`;
}

function userIdOf(key: string): string {
  const escaped = key.slice(0, key.indexOf("|"));
  return escaped.replace(/%(25|7C)/g, (_, code: string) => (code === "25" ? "%" : "|"));
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
