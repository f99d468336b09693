import { setMaxListeners } from "node:events";
import type http from "node:http";
import { Code, ConnectError } from "@connectrpc/connect";
import { fastifyConnectPlugin } from "@connectrpc/connect-fastify";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import Fastify, { type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import { createAccessVerifier } from "./auth/access-verifier.js";
import { createLoginThrottle } from "./auth/login-throttle.js";
import { hashPassword, verifyPassword } from "./auth/passwords.js";
import { accessPolicy } from "./auth/policy.js";
import { LocalRevokedSessions, type RevokedSessions } from "./auth/revoked-sessions.js";
import { CLOCK_TOLERANCE_SECONDS, createTokenService, loadSigningKey } from "./auth/tokens.js";
import { type Bus, LocalBus } from "./chat/bus.js";
import { createChatLimiter } from "./chat/chat-limiter.js";
import { ChatHub } from "./chat/hub.js";
import { LocalPresence, type PresenceTracker } from "./chat/presence.js";
import type { Config } from "./config.js";
import { contextValuesFor } from "./context.js";
import { UserCreatedFeed } from "./events/user-created-feed.js";
import { WakeSignal } from "./events/wake-signal.js";
import { logRedisAvailability } from "./health/redis-availability.js";
import { startStoreProbe } from "./health/store-probe.js";
import { type CallTracker, createCallTracker } from "./interceptors/call-tracker-interceptor.js";
import { HEADER_ONLY_INTERCEPTORS, interceptorChain } from "./interceptors/chain.js";
import { HealthState } from "./protocol/health.js";
import { DEFAULT_WEB_DIST, registerWebApp } from "./protocol/web-app.js";
import { appServices, routes } from "./routes.js";
import { createEngine, type Engine } from "./rpc/engine.js";
import { createListener, type Listener, type RequestHandler } from "./rpc/listener.js";
import { createAuthService } from "./services/auth-service.js";
import { createChatService } from "./services/chat-service.js";
import { createUserService } from "./services/user-service.js";
import type { Store } from "./storage/store.js";
import { appRequestRules } from "./validation/request-rules.js";

/** What `build` needs besides the configuration. */
export interface AppDeps {
  readonly store: Store;
  readonly logger: Logger;
  /** Replaces argon2id hashing (tests of unrelated behaviour may want speed). */
  readonly hashPassword?: (password: string) => Promise<string>;
  /** Replaces argon2id verification (tests count how often a password is checked). */
  readonly verifyPassword?: (phc: string, password: string) => Promise<boolean>;
  /** The built web app to serve (default: web/dist); nothing is served if it is absent. */
  readonly webRoot?: string;
  /**
   * "none" serves without the interceptor chain: only for benchmarks that
   * measure what the chain costs. Never in production.
   */
  readonly interceptors?: "full" | "none";
}

/** A built, not yet listening Switchboard server. */
export interface App {
  readonly fastify: FastifyInstance<http.Server, http.IncomingMessage, http.ServerResponse, Logger>;
  readonly health: HealthState;
  readonly listener: Listener;
  /** Calls in flight and open streams. */
  readonly calls: CallTracker;
  /** The chat hub of this process (stats for tests and metrics). */
  readonly hub: ChatHub;
  /** Starts listening; resolves with the base URL (http:// or https://). */
  listen(): Promise<string>;
  /**
   * Graceful shutdown: NOT_SERVING, stop accepting, let in-flight unary
   * calls finish, end open streams with Unavailable, and force-close
   * whatever is left when the grace period ends. Idempotent.
   */
  shutdown(): Promise<void>;
}

/** Builds the Fastify app with every service on one port. Only `main.ts` listens for real. */
export async function build(config: Config, deps: AppDeps): Promise<App> {
  const { store, logger } = deps;
  const health = new HealthState(appServices.map((s) => s.typeName));
  // Health follows the store: NOT_SERVING while it cannot be reached.
  const storeProbe = startStoreProbe({ store, health, logger });
  const userCreated = new WakeSignal();
  const calls = createCallTracker(config.maxOpenStreams);
  const shutdownController = new AbortController();
  // Connect links every call's signal to this one, so it has a listener per
  // open call: tens of thousands with many idle streams, by design.
  setMaxListeners(0, shutdownController.signal);

  const accessTtlSeconds = config.auth.accessTokenTtlSeconds;
  const tokens = createTokenService({
    key: await loadSigningKey({
      configured: config.auth.signingKey,
      dataDir: config.dataDir,
      env: config.env,
    }),
    accessTtlSeconds: config.auth.accessTokenTtlSeconds,
  });
  // The first admins come from configuration; registering later with one
  // of these names also makes an admin (see UserService).
  if (config.auth.adminUsernames.size > 0) {
    await store.setUserRole([...config.auth.adminUsernames], "admin");
  }
  // Redis (shared rate limits, chat bus, presence) is loaded only when
  // configured: the embedded default starts without ioredis.
  let redis: import("ioredis").Redis | undefined;
  let bus: Bus = new LocalBus();
  let presence: PresenceTracker = new LocalPresence();
  if (config.redisUrl !== undefined) {
    const [{ Redis }, { RedisBus }, { RedisPresence }] = await Promise.all([
      import("ioredis"),
      import("./chat/redis-bus.js"),
      import("./chat/redis-presence.js"),
    ]);
    redis = new Redis(config.redisUrl, {
      connectionName: `switchboard-${process.pid}:limits`,
      // Fail fast instead of queueing: the rate limiter falls back to
      // per-process memory while Redis is away.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
    });
    redis.on("error", (err) => logger.warn({ err }, "redis connection error"));
    logRedisAvailability(redis, logger);
    // Chat fan-out: the store is the source of truth; the bus (Redis pub/sub
    // across instances, or in-process) only wakes the hubs serving a room.
    // Connection names let operators (and tests) tell instances apart in
    // Redis's CLIENT LIST.
    const redisName = `switchboard-${process.pid}`;
    bus = new RedisBus(config.redisUrl, { logger, connectionName: `${redisName}:bus` });
    presence = new RedisPresence(config.redisUrl, {
      logger,
      connectionName: `${redisName}:presence`,
    });
  }
  // Revoked logins, kept while their access tokens could still be accepted.
  const revocationRetention = { retentionMs: (accessTtlSeconds + CLOCK_TOLERANCE_SECONDS) * 1000 };
  const revokedSessions: RevokedSessions =
    redis !== undefined && config.redisUrl !== undefined
      ? await (await import("./auth/redis-revoked-sessions.js")).RedisRevokedSessions.open({
          ...revocationRetention,
          redis,
          url: config.redisUrl,
          logger,
          connectionName: `switchboard-${process.pid}`,
        })
      : new LocalRevokedSessions(revocationRetention);
  const hub = new ChatHub({
    store,
    bus,
    presence,
    subscriberBuffer: config.chat.subscriberBuffer,
    logger,
  });

  // WatchUsers is live on every instance: registrations go over the bus,
  // with a periodic catch-up query for when it is down.
  const userFeed = new UserCreatedFeed({ bus, store, signal: userCreated, logger });

  let listener: Listener | undefined;
  // Set once the services exist (below).
  let engine: Engine | undefined;
  const useEngine = config.rpcEngine === "engine";
  const fastify = Fastify({
    loggerInstance: logger,
    // Every call is logged once by the RPC layer, not per HTTP request.
    logController: new LogController({ disableRequestLogging: true }),
    // One port, every protocol: see rpc/listener.ts. The engine gets first
    // pick of every request; what it leaves (the web app, unknown paths, and
    // every call once draining began) goes to Fastify.
    serverFactory: (handler) => {
      listener = createListener(handler as RequestHandler, {
        tls: config.tls,
        maxConcurrentStreams: config.maxConcurrentStreams,
        http1Timeouts: config.http1Timeouts,
        http2IdleTimeoutMs: config.http2IdleTimeoutMs,
        streamHandler: useEngine
          ? (stream, headers) => engine?.stream(stream, headers) ?? false
          : undefined,
        http1Handler: useEngine ? (req, res) => engine?.http1(req, res) ?? false : undefined,
      });
      // Fastify only calls listen/close/address on it, which net.Server has.
      return listener.server as http.Server;
    },
  });
  if (!listener) throw new Error("serverFactory was not called");
  const oneListener: Listener = listener;

  const userService = createUserService({
    store,
    userCreated,
    announceUserCreated: (record) => userFeed.announce(record.seq),
    logger,
    hashPassword: deps.hashPassword ?? hashPassword,
    adminUsernames: config.auth.adminUsernames,
  });
  const authService = createAuthService({
    store,
    tokens,
    logger,
    refreshTtlSeconds: config.auth.refreshTokenTtlSeconds,
    verifyPassword: deps.verifyPassword ?? verifyPassword,
    revokedSessions,
    refreshRetryGraceSeconds: config.auth.refreshRetryGraceSeconds,
    loginThrottle: createLoginThrottle({ limits: config.loginThrottle, redis, logger }),
  });
  const chatService = createChatService({
    store,
    hub,
    logger,
    chatLimiter: createChatLimiter({ limit: config.rateLimits.chat, redis, logger }),
  });
  const interceptors =
    deps.interceptors === "none"
      ? []
      : interceptorChain({
          logger,
          calls,
          verifyAccessToken: createAccessVerifier({
            verifyToken: (token) => tokens.verifyAccessToken(token),
            revoked: revokedSessions,
            userExists: async (id) => (await store.getUser(id)) !== undefined,
          }),
          policy: accessPolicy,
          rateLimits: config.rateLimits,
          redis,
          requestRules: appRequestRules,
          streamQuotas: config.streamQuotas,
        });
  const acceptCompression = [compressionGzip, compressionBrotli];
  const rpcRoutes = routes({ userService, authService, chatService, health });
  if (useEngine) {
    engine = createEngine({
      routes: rpcRoutes,
      interceptors,
      requestGateAfter: interceptors.length === 0 ? 0 : HEADER_ONLY_INTERCEPTORS,
      contextValues: contextValuesFor,
      acceptCompression,
      readMaxBytes: config.maxMessageBytes,
      writeMaxBytes: config.maxMessageBytes,
      shutdownSignal: shutdownController.signal,
      bodyBudget: config.bodyBudget,
      logger,
    });
  } else {
    // The reference implementation the engine is tested against.
    await fastify.register(fastifyConnectPlugin, {
      routes: rpcRoutes,
      interceptors,
      // The peer as the socket saw it: rate limits and sessions record it.
      contextValues: (req) =>
        contextValuesFor({
          ip: req.ip,
          userAgent: String(req.headers["user-agent"] ?? "").slice(0, 256),
        }),
      acceptCompression,
      readMaxBytes: config.maxMessageBytes,
      writeMaxBytes: config.maxMessageBytes,
      shutdownSignal: shutdownController.signal,
    });
  }

  const webApp = {
    hsts: config.tls !== undefined,
    ...(deps.webRoot ? { root: deps.webRoot } : {}),
  };
  if (await registerWebApp(fastify, webApp)) {
    logger.debug({ root: deps.webRoot ?? DEFAULT_WEB_DIST }, "serving the web app");
  }

  let shuttingDown: Promise<void> | undefined;
  const shutdown = async () => {
    // New calls go to Fastify from now on, which answers 503 while closing.
    engine?.drain();
    health.setAllNotServing();
    const closing = fastify.close();
    oneListener.drain();
    let graceTimer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      graceTimer = setTimeout(resolve, config.shutdownGraceMs);
    });
    await Promise.race([calls.whenUnaryIdle(), grace]);
    shutdownController.abort(new ConnectError("server is shutting down", Code.Unavailable));
    await Promise.race([oneListener.whenIdle(), grace]);
    // Destroying a socket drops writes still buffered (the streams' final
    // Unavailable trailers among them), so connections are ended
    // gracefully and destroyed only when the grace period runs out.
    await Promise.race([oneListener.closeGracefully(), grace]);
    clearTimeout(graceTimer);
    oneListener.destroyAll();
    await closing;
    await hub.close();
    userFeed.close();
    await bus.close();
    await presence.close();
    storeProbe.stop();
    await revokedSessions.close();
    await store.close();
    await redis?.quit().catch(() => undefined);
  };

  return {
    fastify,
    health,
    listener: oneListener,
    calls,
    hub,
    async listen() {
      await fastify.listen({ host: config.host, port: config.port });
      const address = fastify.server.address();
      const port = typeof address === "object" && address ? address.port : config.port;
      const host = config.host === "0.0.0.0" || config.host === "::" ? "localhost" : config.host;
      return `${config.tls ? "https" : "http"}://${host.includes(":") ? `[${host}]` : host}:${port}`;
    },
    shutdown() {
      shuttingDown ??= shutdown();
      return shuttingDown;
    },
  };
}
