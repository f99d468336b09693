import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A cap on request-body bytes held in memory by calls that are still being
 * read: one per connection and one for the process, so that clients who
 * start many large bodies and never finish them (or send them slowly)
 * cannot grow the server without bound before any of those calls has been
 * authenticated. A body's bytes count from the moment they are read off the
 * socket until the call's body has been read in full (or the call ends).
 * HTTP/2 flow control holds back what is not read.
 */
export class BodyBudget {
  #used = 0;

  constructor(
    /** Bytes this budget allows at once. */
    readonly limit: number,
    /** What the limit is of, for the error message ("connection", "server"). */
    readonly scope: string,
    /** The budget this one also draws from (the process's, for a connection). */
    readonly parent?: BodyBudget,
  ) {}

  /** Bytes held now. */
  get used(): number {
    return this.#used;
  }

  /** Takes `n` bytes; throws ResourceExhausted (taking nothing) when this or the parent is full. */
  take(n: number): void {
    if (this.#used + n > this.limit) throw this.#exhausted();
    this.parent?.take(n);
    this.#used += n;
  }

  /** Gives back `n` bytes taken earlier. */
  give(n: number): void {
    this.#used -= n;
    this.parent?.give(n);
  }

  #exhausted(): ConnectError {
    return new ConnectError(
      `too many request bytes in flight on this ${this.scope} (limit ${this.limit}); retry later`,
      Code.ResourceExhausted,
    );
  }
}
