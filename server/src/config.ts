import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { z } from "zod";
import type { LoginThrottleLimits } from "./auth/login-throttle.js";

/**
 * Switchboard's configuration: every environment variable is parsed and
 * validated here, once, at start-up. All problems are reported together and
 * the result is frozen. Only `main.ts` passes `process.env` in; everything
 * else receives a `Config`.
 */

const port = z.coerce
  .number({ error: "must be a number" })
  .int("must be an integer")
  .min(0, "must be 0..65535")
  .max(65535, "must be 0..65535");

const positiveInt = (max: number) =>
  z.coerce
    .number({ error: "must be a number" })
    .int("must be an integer")
    .min(1, "must be at least 1")
    .max(max, `must be at most ${max}`);

const emptyAsUndefined = (v: unknown) => (v === "" ? undefined : v);

/** A rate limit written as `POINTS/SECONDS`, e.g. `10/60`: 10 calls per 60 s. */
const rateLimit = z
  .string()
  .regex(/^\d+\/\d+$/, "must look like POINTS/SECONDS, e.g. 10/60")
  .transform((v) => {
    const [points, seconds] = v.split("/").map(Number) as [number, number];
    return { points, durationSeconds: seconds };
  })
  .refine((r) => r.points >= 1 && r.durationSeconds >= 1, "points and seconds must be at least 1");

/**
 * Login-failure windows are kept in timers in memory, which cannot exceed
 * 24.8 days; 21 days (auth/login-throttle.ts REMEMBER_SECONDS) is the cap.
 */
const MAX_LOGIN_WINDOW_SECONDS = 21 * 24 * 3600;
const loginWindow = rateLimit.refine(
  (r) => r.durationSeconds <= MAX_LOGIN_WINDOW_SECONDS,
  `seconds must be at most ${MAX_LOGIN_WINDOW_SECONDS} (21 days)`,
);

const envSchema = z
  .object({
    NODE_ENV: z.enum(["development", "production", "test"]).default("development"),
    HOST: z.string().min(1).default("127.0.0.1"),
    PORT: port.default(8080),
    DATA_DIR: z.string().min(1).default("./data"),
    DATABASE_URL: z.preprocess(
      emptyAsUndefined,
      z
        .string()
        .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
        .optional(),
    ),
    TLS_CERT: z.preprocess(emptyAsUndefined, z.string().optional()),
    TLS_KEY: z.preprocess(emptyAsUndefined, z.string().optional()),
    TLS_CLIENT_CA: z.preprocess(emptyAsUndefined, z.string().optional()),
    TLS_CLIENT_AUTH: z.enum(["require", "request"]).default("require"),
    LOG_LEVEL: z
      .enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"])
      .default("info"),
    LOG_FORMAT: z.enum(["json", "pretty"]).optional(),
    SHUTDOWN_GRACE_MS: positiveInt(600_000).default(10_000),
    MAX_MESSAGE_BYTES: positiveInt(256 * 1024 * 1024).default(4 * 1024 * 1024),
    MAX_CONCURRENT_STREAMS: positiveInt(100_000).default(256),
    MAX_OPEN_STREAMS: positiveInt(1_000_000).default(20_000),
    MAX_STREAMS_PER_USER: positiveInt(1_000_000).default(100),
    MAX_STREAMS_PER_ANONYMOUS_IP: positiveInt(1_000_000).default(20),
    RPC_ENGINE: z.enum(["engine", "connect"]).default("engine"),
    HEADERS_TIMEOUT_MS: positiveInt(600_000).default(10_000),
    REQUEST_TIMEOUT_MS: positiveInt(3_600_000).default(60_000),
    KEEP_ALIVE_TIMEOUT_MS: positiveInt(3_600_000).default(60_000),
    HTTP2_IDLE_TIMEOUT_MS: positiveInt(86_400_000).default(120_000),
    BODY_BYTES_PER_CONNECTION: positiveInt(1024 * 1024 * 1024).default(8 * 1024 * 1024),
    BODY_BYTES_TOTAL: positiveInt(16 * 1024 * 1024 * 1024).default(64 * 1024 * 1024),
    AUTH_SIGNING_KEY: z.preprocess(
      emptyAsUndefined,
      z
        .string()
        .refine(
          (v) => Buffer.from(v, "base64url").length >= 32,
          "must be at least 32 bytes, base64url-encoded (e.g. `openssl rand -base64 32`)",
        )
        .optional(),
    ),
    ACCESS_TOKEN_TTL_SECONDS: positiveInt(24 * 3600).default(15 * 60),
    REFRESH_TOKEN_TTL_SECONDS: positiveInt(365 * 24 * 3600).default(30 * 24 * 3600),
    REFRESH_RETRY_GRACE_SECONDS: z.coerce
      .number({ error: "must be a number" })
      .int("must be an integer")
      .min(0, "must be 0..300")
      .max(300, "must be 0..300")
      .default(30),
    ADMIN_USERNAMES: z.string().default(""),
    REDIS_URL: z.preprocess(
      emptyAsUndefined,
      z
        .string()
        .regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL")
        .optional(),
    ),
    RATE_LIMIT_USER: rateLimit.prefault("100/1"),
    RATE_LIMIT_PUBLIC: rateLimit.prefault("30/1"),
    RATE_LIMIT_LOGIN: rateLimit.prefault("10/60"),
    RATE_LIMIT_REGISTER: rateLimit.prefault("20/3600"),
    RATE_LIMIT_CHAT: rateLimit.prefault("20/10"),
    LOGIN_FAILS_PER_ACCOUNT: loginWindow.prefault("100/86400"),
    LOGIN_FAILS_PER_ACCOUNT_AND_IP: positiveInt(1_000_000).default(10),
    LOGIN_FAILS_PER_IP: loginWindow.prefault("100/86400"),
    LOGIN_LOCKOUT_SECONDS: positiveInt(86_400).default(60),
    LOGIN_LOCKOUT_MAX_SECONDS: positiveInt(86_400).default(3600),
    CHAT_SUBSCRIBER_BUFFER: positiveInt(1_000_000).default(512),
  })
  .superRefine((env, ctx) => {
    if (env.NODE_ENV === "production" && env.AUTH_SIGNING_KEY === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["AUTH_SIGNING_KEY"],
        message:
          "is required in production (tokens must survive restarts and be shared by every instance)",
      });
    }
    if ((env.TLS_CERT === undefined) !== (env.TLS_KEY === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [env.TLS_CERT === undefined ? "TLS_CERT" : "TLS_KEY"],
        message: "TLS_CERT and TLS_KEY must be set together",
      });
    }
    if (env.LOGIN_LOCKOUT_MAX_SECONDS < env.LOGIN_LOCKOUT_SECONDS) {
      ctx.addIssue({
        code: "custom",
        path: ["LOGIN_LOCKOUT_MAX_SECONDS"],
        message: "must be at least LOGIN_LOCKOUT_SECONDS",
      });
    }
    if (env.TLS_CLIENT_CA !== undefined && env.TLS_CERT === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["TLS_CLIENT_CA"],
        message: "needs TLS_CERT and TLS_KEY (client certificates are a TLS feature)",
      });
    }
  });

/** The port's TLS: certificate, key, and optionally the CA client certificates are checked against. */
export interface TlsConfig {
  readonly cert: Buffer;
  readonly key: Buffer;
  /**
   * PEM CA bundle (TLS_CLIENT_CA): clients are asked for a certificate
   * signed by it. With `clientAuth` "require" a connection without one is
   * refused in the handshake; with "request" it is let through (and a
   * certificate that does not verify is still refused).
   */
  readonly clientCa?: Buffer | undefined;
  readonly clientAuth: "require" | "request";
}

/** The validated, frozen configuration. */
export interface Config {
  readonly env: "development" | "production" | "test";
  readonly host: string;
  readonly port: number;
  /** Absolute path of the data directory (SQLite database, generated keys). */
  readonly dataDir: string;
  /** PostgreSQL URL; when absent the embedded SQLite store is used. */
  readonly databaseUrl: string | undefined;
  /** PEM certificate and key; when present the port speaks TLS (ALPN h2 and http/1.1). */
  readonly tls: TlsConfig | undefined;
  readonly log: { readonly level: string; readonly pretty: boolean };
  /** How long in-flight calls get to finish after SIGTERM/SIGINT. */
  readonly shutdownGraceMs: number;
  /** Largest request or response message, in bytes; bigger ones fail with ResourceExhausted. */
  readonly maxMessageBytes: number;
  /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS announced to each connection. */
  readonly maxConcurrentStreams: number;
  /** Cap on long-lived streaming calls open at once in this process. */
  readonly maxOpenStreams: number;
  /**
   * Streams one caller may hold open at once, below `maxOpenStreams`: per
   * authenticated user, and per client IP for anonymous (public) streams.
   */
  readonly streamQuotas: { readonly perUser: number; readonly perAnonymousIp: number };
  /**
   * What serves the RPCs: "engine", Switchboard's protocol engine
   * (server/src/rpc/), or "connect", connect-fastify — the reference
   * implementation the engine is tested against.
   */
  readonly rpcEngine: "engine" | "connect";
  /**
   * Request-body bytes the engine holds while reading bodies, per connection
   * and for the whole process; past either, a call fails with
   * ResourceExhausted instead of growing the server.
   */
  readonly bodyBudget: { readonly perConnection: number; readonly total: number };
  /**
   * HTTP/1.1: headers must arrive within `headersMs`, the whole request
   * within `requestMs`; idle keep-alive connections close after
   * `keepAliveMs` (HEADERS_TIMEOUT_MS, REQUEST_TIMEOUT_MS,
   * KEEP_ALIVE_TIMEOUT_MS).
   */
  /** An HTTP/2 session with no open stream and no traffic for this long is destroyed. */
  readonly http2IdleTimeoutMs: number;
  readonly http1Timeouts: {
    readonly headersMs: number;
    readonly requestMs: number;
    readonly keepAliveMs: number;
  };
  readonly auth: {
    /**
     * HMAC key for access tokens. Undefined outside production: a key is then
     * generated once and kept in DATA_DIR.
     */
    readonly signingKey: Buffer | undefined;
    readonly accessTokenTtlSeconds: number;
    readonly refreshTokenTtlSeconds: number;
    /** How long a rotated refresh token is answered as a retry (0: never). */
    readonly refreshRetryGraceSeconds: number;
    /** Usernames (lower-cased) that get the admin role. */
    readonly adminUsernames: ReadonlySet<string>;
  };
  /** Redis URL; when set, rate limits (and later the chat bus) are shared through Redis. */
  readonly redisUrl: string | undefined;
  readonly rateLimits: {
    /** Per authenticated user, every call. */
    readonly user: RateLimit;
    /** Per client IP, public calls. */
    readonly public: RateLimit;
    /** Per client IP, Login (password guessing). */
    readonly login: RateLimit;
    /** Per client IP, RegisterUser (sign-up floods). */
    readonly register: RateLimit;
    /** Per user, chat messages sent (Send and the bidi Chat call). */
    readonly chat: RateLimit;
  };
  /**
   * Login-failure limits, checked before any password is: per client IP, per
   * account and client IP (consecutive, with a doubling lockout, reset by a
   * success), and per account from client IPs it never logged in from.
   */
  readonly loginThrottle: LoginThrottleLimits;
  readonly chat: {
    /**
     * Events a subscriber may have queued and unread before it is cut off
     * (it then resumes with after_id).
     */
    readonly subscriberBuffer: number;
  };
}

/** `points` calls per `durationSeconds`. */
export interface RateLimit {
  readonly points: number;
  readonly durationSeconds: number;
}

/** Thrown by `loadConfig` with every problem found, one per line. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** Parses and validates the environment; throws `ConfigError` listing every bad variable. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const name = issue.path.join(".");
        return `${name}: ${issue.message}${name in env ? ` (got ${JSON.stringify(env[name])})` : ""}`;
      }),
    );
  }
  const e = parsed.data;
  const problems: string[] = [];
  const readPem = (name: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (err) {
      problems.push(`${name}: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? err})`);
      return Buffer.alloc(0);
    }
  };
  const tls =
    e.TLS_CERT !== undefined && e.TLS_KEY !== undefined
      ? {
          cert: readPem("TLS_CERT", e.TLS_CERT),
          key: readPem("TLS_KEY", e.TLS_KEY),
          clientCa:
            e.TLS_CLIENT_CA === undefined ? undefined : readPem("TLS_CLIENT_CA", e.TLS_CLIENT_CA),
          clientAuth: e.TLS_CLIENT_AUTH,
        }
      : undefined;
  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({
    env: e.NODE_ENV,
    host: e.HOST,
    port: e.PORT,
    dataDir: resolve(e.DATA_DIR),
    databaseUrl: e.DATABASE_URL,
    tls: tls && Object.freeze(tls),
    log: Object.freeze({
      level: e.LOG_LEVEL,
      pretty: (e.LOG_FORMAT ?? (e.NODE_ENV === "development" ? "pretty" : "json")) === "pretty",
    }),
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    maxMessageBytes: e.MAX_MESSAGE_BYTES,
    maxConcurrentStreams: e.MAX_CONCURRENT_STREAMS,
    maxOpenStreams: e.MAX_OPEN_STREAMS,
    streamQuotas: {
      perUser: e.MAX_STREAMS_PER_USER,
      perAnonymousIp: e.MAX_STREAMS_PER_ANONYMOUS_IP,
    },
    rpcEngine: e.RPC_ENGINE,
    bodyBudget: { perConnection: e.BODY_BYTES_PER_CONNECTION, total: e.BODY_BYTES_TOTAL },
    http2IdleTimeoutMs: e.HTTP2_IDLE_TIMEOUT_MS,
    http1Timeouts: {
      headersMs: e.HEADERS_TIMEOUT_MS,
      requestMs: e.REQUEST_TIMEOUT_MS,
      keepAliveMs: e.KEEP_ALIVE_TIMEOUT_MS,
    },
    auth: Object.freeze({
      signingKey:
        e.AUTH_SIGNING_KEY === undefined ? undefined : Buffer.from(e.AUTH_SIGNING_KEY, "base64url"),
      accessTokenTtlSeconds: e.ACCESS_TOKEN_TTL_SECONDS,
      refreshTokenTtlSeconds: e.REFRESH_TOKEN_TTL_SECONDS,
      refreshRetryGraceSeconds: e.REFRESH_RETRY_GRACE_SECONDS,
      adminUsernames: new Set(
        e.ADMIN_USERNAMES.split(",")
          .map((u) => u.trim().toLowerCase())
          .filter((u) => u !== ""),
      ),
    }),
    redisUrl: e.REDIS_URL,
    rateLimits: Object.freeze({
      user: Object.freeze(e.RATE_LIMIT_USER),
      public: Object.freeze(e.RATE_LIMIT_PUBLIC),
      login: Object.freeze(e.RATE_LIMIT_LOGIN),
      register: Object.freeze(e.RATE_LIMIT_REGISTER),
      chat: Object.freeze(e.RATE_LIMIT_CHAT),
    }),
    loginThrottle: Object.freeze({
      consecutiveFailsPerAccountAndIp: e.LOGIN_FAILS_PER_ACCOUNT_AND_IP,
      failsPerAccount: Object.freeze(e.LOGIN_FAILS_PER_ACCOUNT),
      failsPerIp: Object.freeze(e.LOGIN_FAILS_PER_IP),
      lockoutSeconds: e.LOGIN_LOCKOUT_SECONDS,
      maxLockoutSeconds: e.LOGIN_LOCKOUT_MAX_SECONDS,
    }),
    chat: Object.freeze({ subscriberBuffer: e.CHAT_SUBSCRIBER_BUFFER }),
  });
}
