import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

/**
 * One listening port for every protocol Switchboard speaks.
 *
 * - Cleartext: browsers use HTTP/1.1 (Connect, gRPC-Web) while native gRPC
 *   clients use h2c with prior knowledge. Node has no server that does both,
 *   so a `net.Server` reads the first bytes of each connection, compares them
 *   with the HTTP/2 connection preface, puts them back and hands the socket
 *   to an HTTP/1.1 or an HTTP/2 server.
 * - TLS: one `http2` secure server with `allowHTTP1`, so ALPN picks `h2` or
 *   `http/1.1` on the same port.
 *
 * The listener also tracks every connection so shutdown can first drain
 * (GOAWAY for HTTP/2, close idle HTTP/1.1 keep-alives) and then force-close.
 */

/** The request handler Fastify hands to its `serverFactory`. */
export type RequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** Takes an HTTP/2 stream (returns true and answers it) or leaves it (false). */
export type StreamHandler = (
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
) => boolean;

/** Takes an HTTP/1.1 request (returns true and answers it) or leaves it (false). */
export type Http1Handler = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

/** Options for `createListener`. */
export interface ListenerOptions {
  /**
   * PEM certificate and key; when set, the port speaks TLS. With `clientCa`,
   * clients are asked for a certificate signed by it ("require": refused
   * without one; "request": let through without one; a certificate that does
   * not verify is refused either way).
   */
  readonly tls?:
    | {
        readonly cert: Buffer;
        readonly key: Buffer;
        readonly clientCa?: Buffer | undefined;
        readonly clientAuth?: "require" | "request";
      }
    | undefined;
  /** SETTINGS_MAX_CONCURRENT_STREAMS announced to HTTP/2 peers. */
  readonly maxConcurrentStreams: number;
  /** A connection that sends no first byte within this time is dropped. */
  readonly prefaceTimeoutMs?: number;
  /**
   * HTTP/1.1 timeouts: the request headers must arrive within `headersMs`
   * and the whole request within `requestMs`; an idle keep-alive connection
   * is closed after `keepAliveMs`. Node's defaults otherwise (60 s, 300 s,
   * 5 s).
   */
  /**
   * An HTTP/2 session with no open stream and no traffic for this long is
   * destroyed. This also reaps sessions Node stopped reading after it sent
   * GOAWAY for a flood (rapid reset): they would otherwise stay open for
   * good, even after the client's FIN.
   */
  readonly http2IdleTimeoutMs?: number;
  readonly http1Timeouts?: {
    readonly headersMs: number;
    readonly requestMs: number;
    readonly keepAliveMs: number;
  };
  /**
   * Gets first pick of every HTTP/2 stream (the gRPC and Connect unary fast
   * paths); the streams it declines go through Node's compat layer to `handler`.
   */
  readonly streamHandler?: StreamHandler | undefined;
  /**
   * Gets first pick of every HTTP/1.1 request (cleartext or TLS: the Connect
   * unary fast path); returns true when it answers the request itself, false
   * to leave it to `handler`.
   */
  readonly http1Handler?: Http1Handler | undefined;
}

/** The server Fastify listens on, plus the controls shutdown needs. */
export interface Listener {
  /** The listening server (what `serverFactory` returns). */
  readonly server: net.Server;
  /** Starts a graceful drain: GOAWAY to HTTP/2 sessions, idle HTTP/1.1 connections closed. */
  drain(): void;
  /**
   * Ends connections that carry no request any more: HTTP/1.1 sockets get a
   * FIN after their buffered writes flush (HTTP/2 sessions already got
   * GOAWAY from `drain` and close themselves). Resolves when all are closed.
   */
  closeGracefully(): Promise<void>;
  /** Destroys every connection still open (the last resort when the grace period ends). */
  destroyAll(): void;
  /** Number of open TCP connections. */
  connectionCount(): number;
  /** Resolves once no request is in flight (immediately if none is). */
  whenIdle(): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

/** Creates the one-port listener serving `handler` over HTTP/1.1 and HTTP/2. */
export function createListener(appHandler: RequestHandler, options: ListenerOptions): Listener {
  let inFlight = 0;
  let idleWaiters: Array<() => void> = [];
  const finished = () => {
    inFlight--;
    if (inFlight === 0) {
      for (const wake of idleWaiters) wake();
      idleWaiters = [];
    }
  };
  const http1Handler = options.http1Handler;
  const handler: RequestHandler = (req, res) => {
    inFlight++;
    res.once("close", finished);
    if (
      http1Handler &&
      req.httpVersionMajor === 1 &&
      http1Handler(req as http.IncomingMessage, res as http.ServerResponse)
    ) {
      return;
    }
    appHandler(req, res);
  };
  const whenIdle = () =>
    inFlight === 0 ? Promise.resolve() : new Promise<void>((r) => idleWaiters.push(r));
  const sessions = new Set<http2.Http2Session>();
  const sockets = new Set<net.Socket>();
  let closeWaiters: Array<() => void> = [];
  const untrack = (socket: net.Socket) => {
    sockets.delete(socket);
    if (sockets.size === 0) {
      for (const wake of closeWaiters) wake();
      closeWaiters = [];
    }
  };
  // HTTP/2 sockets are left to their sessions: ending the socket could cut
  // off frames nghttp2 has not flushed yet (a stream's final trailers).
  const http2Sockets = new WeakSet<net.Socket>();
  const closeGracefully = () => {
    for (const socket of sockets) {
      if (!http2Sockets.has(socket)) socket.end();
    }
    return sockets.size === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => closeWaiters.push(resolve));
  };
  const settings = { maxConcurrentStreams: options.maxConcurrentStreams };
  let draining = false;

  /**
   * Puts `options.streamHandler` in front of Node's compat layer: the
   * server's own 'stream' listener (which builds the `(req, res)` pair and
   * emits 'request') is taken off and called only for declined streams.
   */
  const routeStreams = (server: http2.Http2Server | http2.Http2SecureServer) => {
    const streamHandler = options.streamHandler;
    if (!streamHandler) return;
    const compat = server.listeners("stream") as Array<(...args: unknown[]) => void>;
    server.removeAllListeners("stream");
    server.on(
      "stream",
      (
        stream: http2.ServerHttp2Stream,
        headers: http2.IncomingHttpHeaders,
        flags: number,
        rawHeaders: string[],
      ) => {
        if (streamHandler(stream, headers)) {
          inFlight++;
          stream.once("close", finished);
          return;
        }
        for (const listener of compat) listener.call(server, stream, headers, flags, rawHeaders);
      },
    );
  };

  /** Open streams per session, for the idle timeout. */
  const openStreams = new WeakMap<http2.Http2Session, number>();
  const countStream = (stream: http2.ServerHttp2Stream) => {
    const session = stream.session;
    if (!session) return;
    openStreams.set(session, (openStreams.get(session) ?? 0) + 1);
    stream.once("close", () => openStreams.set(session, (openStreams.get(session) ?? 1) - 1));
  };
  const trackSession = (session: http2.Http2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (options.http2IdleTimeoutMs !== undefined) {
      // Fires after that long without a frame in either direction; a
      // session holding open (idle) streams, such as a quiet chat
      // subscription, is left alone.
      session.setTimeout(options.http2IdleTimeoutMs, () => {
        if ((openStreams.get(session) ?? 0) === 0) session.destroy();
      });
    }
    if (draining) session.close();
  };

  /** The Listener around `server`; `drainHttp1` closes idle HTTP/1.1 connections. */
  const controls = (server: net.Server, drainHttp1: () => void): Listener => ({
    server,
    drain() {
      draining = true;
      for (const session of sessions) session.close();
      drainHttp1();
    },
    destroyAll() {
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
    },
    connectionCount: () => sockets.size,
    whenIdle,
    closeGracefully,
  });

  if (options.tls) {
    const { cert, key, clientCa, clientAuth } = options.tls;
    const server = http2.createSecureServer(
      {
        cert,
        key,
        allowHTTP1: true,
        settings,
        ...(clientCa === undefined
          ? {}
          : { ca: clientCa, requestCert: true, rejectUnauthorized: clientAuth !== "request" }),
      },
      handler,
    );
    if (clientCa !== undefined && clientAuth === "request") {
      // Without rejectUnauthorized Node lets a certificate that does not
      // verify through too; only "no certificate" is allowed here.
      server.on("secureConnection", (socket: import("node:tls").TLSSocket) => {
        if (socket.getPeerCertificate()?.subject !== undefined && !socket.authorized) {
          socket.destroy();
        }
      });
    }
    routeStreams(server);
    server.prependListener("stream", countStream);
    server.on("session", trackSession);
    server.on("secureConnection", (socket: import("node:tls").TLSSocket) => {
      if (socket.alpnProtocol === "h2") http2Sockets.add(socket);
      sockets.add(socket);
      socket.once("close", () => untrack(socket));
    });
    // HTTP/1.1-over-TLS keep-alives are ended once requests drain.
    return controls(server, () => undefined);
  }

  const timeouts = options.http1Timeouts;
  const h1 = http.createServer(
    timeouts === undefined
      ? {}
      : {
          headersTimeout: timeouts.headersMs,
          requestTimeout: timeouts.requestMs,
          keepAliveTimeout: timeouts.keepAliveMs,
          // How often Node checks the header and request timeouts.
          connectionsCheckingInterval: Math.min(1000, Math.max(50, timeouts.headersMs / 4)),
        },
    handler,
  );
  // Node starts checking headersTimeout/requestTimeout when an http.Server
  // starts listening; this one never listens (it parses the sockets the
  // port hands it), so its checker is started the way 'listening' starts it.
  // Without this a client sending its headers a byte at a time (slowloris)
  // is never timed out.
  h1.emit("listening");
  const h2 = http2.createServer({ settings }, handler);
  routeStreams(h2);
  h2.prependListener("stream", countStream);
  h2.on("session", trackSession);
  // The sub-servers never listen; they only parse the sockets handed to them.
  const prefaceTimeoutMs = options.prefaceTimeoutMs ?? 10_000;

  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.once("close", () => untrack(socket));
    sniff(socket, prefaceTimeoutMs, (isHttp2) => {
      if (isHttp2) http2Sockets.add(socket);
      (isHttp2 ? h2 : h1).emit("connection", socket);
    });
  });

  return controls(server, () => {
    h1.closeIdleConnections();
    // Keep-alive connections that finish a response during the grace
    // period become idle; close them as they do.
    const timer = setInterval(() => {
      h1.closeIdleConnections();
      if (sockets.size === 0) clearInterval(timer);
    }, 50);
    timer.unref();
  });
}

/**
 * Reads the first bytes of a connection in paused mode and decides whether
 * it is HTTP/2 with prior knowledge. The bytes are `unshift`ed back before
 * the socket is handed on, so the chosen server sees the stream untouched.
 * (A 'data' listener instead of 'readable' switches the socket to flowing
 * mode, which the HTTP/2 server does not survive.)
 */
function sniff(socket: net.Socket, timeoutMs: number, done: (isHttp2: boolean) => void): void {
  let received = Buffer.alloc(0);
  const timer = setTimeout(() => socket.destroy(), timeoutMs);
  timer.unref();
  const finish = (isHttp2: boolean) => {
    clearTimeout(timer);
    socket.off("readable", onReadable);
    socket.off("end", onEnd);
    socket.unshift(received);
    done(isHttp2);
  };
  const onEnd = () => {
    clearTimeout(timer);
    socket.destroy();
  };
  const onReadable = () => {
    for (let chunk = socket.read(); chunk !== null; chunk = socket.read()) {
      received = Buffer.concat([received, chunk as Buffer]);
    }
    const n = Math.min(received.length, PREFACE.length);
    if (n === 0) return;
    if (!received.subarray(0, n).equals(PREFACE.subarray(0, n))) finish(false);
    else if (n === PREFACE.length) finish(true);
  };
  socket.on("readable", onReadable);
  socket.on("end", onEnd);
  socket.on("error", () => clearTimeout(timer));
}
