import type http from "node:http";
import http2 from "node:http2";
import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Peer } from "../context.js";
import type { BodyBudget } from "./body-budget.js";
import { peerOf } from "./call.js";
import type { NodeIncomingHeaders } from "./headers.js";
import { errorFromNodeReason, errorFromResetCode, nodeHeaders } from "./upstream.js";

/**
 * One request and its answer, whichever HTTP version carries it: a raw
 * `node:http2` stream or a `node:http` request/response pair. The drivers
 * read and write only through this.
 *
 * Every way an exchange can end reaches `onClose` exactly once — the answer
 * written, the client's reset, the socket closed (under backpressure too),
 * the server's own reset — and a `write` waiting for the transport to drain
 * settles when the exchange closes instead of waiting forever.
 */
export interface Exchange {
  /** "2.0" or "1.1" (as Node reports it). */
  readonly httpVersion: string;
  readonly method: string;
  /** The request target as sent (path and query). */
  readonly path: string;
  /** `:authority` or `host`; undefined when absent. */
  readonly authority: string | undefined;
  readonly encrypted: boolean;
  readonly headers: NodeIncomingHeaders;
  readonly peer: Peer;
  /** The request body. */
  readonly body: Readable;
  /** The connection's budget for request bytes being read. */
  readonly budget: BodyBudget;
  /** Whether the answer can still be written. */
  readonly writable: boolean;
  /**
   * Calls `listener` once, when the exchange closes: with the reason when
   * the client went away (a reset code it sent, a broken socket), undefined
   * otherwise.
   */
  onClose(listener: (reason: ConnectError | undefined) => void): void;
  /** Sends status and headers; `trailers`: whether trailers will follow. */
  respond(status: number, header: Headers, trailers: boolean): void;
  /** Writes one chunk; resolves when the transport takes more, rejects once the exchange closed. */
  write(chunk: Uint8Array): Promise<void>;
  /** Ends the answer, with a last chunk and the trailers (if `respond` said so). */
  end(chunk?: Uint8Array, trailer?: Headers): void;
  /** Tears the exchange down without a (complete) answer. */
  reset(): void;
}

/** Why a call ends when its client is gone without saying why (no reset code, a closed socket). */
export const gone = (): ConnectError => new ConnectError("the client went away", Code.Canceled);

/**
 * Waits for `stream` to take more after a write returned false: 'drain',
 * or the exchange closing (a closed stream never drains), or an error.
 */
function whenDrained(stream: NodeJS.EventEmitter, onClose: (l: () => void) => void) {
  return new Promise<void>((resolve, reject) => {
    const done = (error?: unknown) => {
      stream.off("drain", onDrain);
      stream.off("error", onError);
      if (error === undefined) resolve();
      else reject(error);
    };
    const onDrain = () => done();
    const onError = (err: unknown) => done(errorFromNodeReason(err));
    stream.on("drain", onDrain);
    stream.on("error", onError);
    onClose(() => done(gone()));
  });
}

/** The listeners waiting for an exchange to close; a listener added after it closed runs at once. */
class Closing {
  closed = false;
  #listeners: Array<() => void> = [];

  readonly add = (listener: () => void): void => {
    if (this.closed) listener();
    else this.#listeners.push(listener);
  };

  readonly close = (): void => {
    this.closed = true;
    for (const listener of this.#listeners) listener();
    this.#listeners = [];
  };
}

/** An exchange on a raw HTTP/2 stream. */
export class Http2Exchange implements Exchange {
  readonly httpVersion = "2.0";
  readonly method: string;
  readonly path: string;
  readonly authority: string | undefined;
  readonly encrypted: boolean;
  readonly peer: Peer;
  readonly #closing = new Closing();

  constructor(
    readonly body: http2.ServerHttp2Stream,
    readonly headers: http2.IncomingHttpHeaders,
    readonly budget: BodyBudget,
  ) {
    this.method = headers[":method"] ?? "";
    this.path = headers[":path"] ?? "";
    // connect-node's Http2ServerRequest.authority: :authority, else host.
    this.authority = headers[":authority"] ?? headers.host;
    this.encrypted = body.session?.encrypted === true;
    this.peer = peerOf(body.session?.socket?.remoteAddress, headers["user-agent"]);
    body.on("error", () => undefined); // reported through 'close' / rstCode
    body.once("close", this.#closing.close);
  }

  get writable(): boolean {
    return !this.#closing.closed && !this.body.destroyed;
  }

  onClose(listener: (reason: ConnectError | undefined) => void): void {
    this.#closing.add(() => listener(errorFromResetCode(this.body.rstCode)));
  }

  respond(status: number, header: Headers, trailers: boolean): void {
    this.body.respond(nodeHeaders(header, { ":status": status }), { waitForTrailers: trailers });
  }

  write(chunk: Uint8Array): Promise<void> {
    if (!this.writable) return Promise.reject(gone());
    if (this.body.write(chunk)) return Promise.resolve();
    return whenDrained(this.body, this.#closing.add);
  }

  end(chunk?: Uint8Array, trailer?: Headers): void {
    const stream = this.body;
    if (!this.writable) return;
    if (trailer !== undefined) {
      const trailers = nodeHeaders(trailer);
      stream.once("wantTrailers", () => stream.sendTrailers(trailers));
    }
    if (chunk === undefined) stream.end();
    else stream.end(chunk);
  }

  reset(): void {
    this.body.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }
}

/** An exchange on a `node:http` request and response (HTTP/1.x, cleartext or TLS). */
export class Http1Exchange implements Exchange {
  readonly httpVersion: string;
  readonly method: string;
  readonly path: string;
  readonly authority: string | undefined;
  readonly encrypted: boolean;
  readonly headers: NodeIncomingHeaders;
  readonly peer: Peer;
  readonly #closing = new Closing();

  constructor(
    readonly body: http.IncomingMessage,
    readonly res: http.ServerResponse,
    readonly budget: BodyBudget,
  ) {
    this.httpVersion = body.httpVersion;
    this.method = body.method ?? "";
    this.path = body.url ?? "";
    this.headers = body.headers;
    this.authority = body.headers.host;
    const socket = body.socket as http.IncomingMessage["socket"] & { encrypted?: boolean };
    this.encrypted = socket.encrypted === true;
    this.peer = peerOf(socket.remoteAddress, body.headers["user-agent"]);
    body.on("error", () => undefined); // reported through the response's 'close'
    // Node emits 'close' on the request once its body is read; the
    // response's 'close' is the end of the exchange (nodejs/node#40775).
    res.once("close", this.#closing.close);
  }

  get writable(): boolean {
    return !this.#closing.closed && !this.res.destroyed;
  }

  onClose(listener: (reason: ConnectError | undefined) => void): void {
    this.#closing.add(() =>
      listener(
        this.res.writableFinished
          ? undefined
          : this.body.errored
            ? errorFromNodeReason(this.body.errored)
            : gone(),
      ),
    );
  }

  respond(status: number, header: Headers): void {
    this.res.writeHead(status, nodeHeaders(header));
  }

  write(chunk: Uint8Array): Promise<void> {
    if (!this.writable) return Promise.reject(gone());
    if (this.res.write(chunk)) return Promise.resolve();
    return whenDrained(this.res, this.#closing.add);
  }

  end(chunk?: Uint8Array, trailer?: Headers): void {
    if (!this.writable) return;
    if (trailer !== undefined) this.res.addTrailers(nodeHeaders(trailer));
    if (chunk === undefined) this.res.end();
    else this.res.end(chunk);
  }

  reset(): void {
    this.res.destroy();
  }
}
