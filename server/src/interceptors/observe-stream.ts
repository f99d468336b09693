/**
 * Re-yields a streaming response's messages so an interceptor can act when
 * a message is taken, when the stream fails and when it ends (cancellation
 * included), which is how connect-es interceptors wrap streams.
 *
 * Written as a plain async iterator rather than an `async function*` with
 * `yield*`: every layer of the interceptor chain wraps the stream once, and
 * each generator layer costs several promises and a resumption per message.
 * With five layers that was about a third of the server's CPU in chat
 * fan-out. Forwarding `next()` costs one `then` per message; the observable
 * behaviour is the generator's:
 * - messages pass through unchanged, in order;
 * - an error from the stream goes through `onError` (whose result is thrown
 *   instead), then `onEnd`;
 * - the stream's end, or the consumer's `return()` (which is passed on, so
 *   the producer's `finally` blocks run), calls `onEnd`;
 * - `onEnd` runs once, and after it the iterator only says done.
 */
export interface StreamHooks {
  /**
   * Called when the consumer asks for the next message after it took one
   * (the transport wrote it and wants more); not after the last one.
   */
  readonly onResume?: () => void;
  /** Called with whatever the stream threw; returns what to throw instead. */
  readonly onError?: (err: unknown) => unknown;
  /**
   * Called once when the stream is done, however it ended: `"done"` when it
   * completed, `"error"` after `onError`, `"return"` when the consumer
   * stopped reading.
   */
  readonly onEnd?: (how: "done" | "error" | "return") => void;
}

/** Wraps `messages` with `hooks`. */
export function observeStream<T>(
  messages: AsyncIterable<T>,
  hooks: StreamHooks,
): AsyncIterableIterator<T> {
  return new ObservedStream(messages, hooks);
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

class ObservedStream<T> implements AsyncIterableIterator<T> {
  readonly #messages: AsyncIterable<T>;
  readonly #hooks: StreamHooks;
  #iterator: AsyncIterator<T> | undefined;
  /** A message was handed out; the next `next()` resumes the stream. */
  #took = false;
  #ended = false;

  constructor(messages: AsyncIterable<T>, hooks: StreamHooks) {
    this.#messages = messages;
    this.#hooks = hooks;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#ended) return Promise.resolve(DONE);
    if (this.#took) {
      this.#took = false;
      this.#hooks.onResume?.();
    }
    let pending: Promise<IteratorResult<T>>;
    try {
      this.#iterator ??= this.#messages[Symbol.asyncIterator]();
      pending = this.#iterator.next();
    } catch (err) {
      return Promise.reject(this.#fail(err));
    }
    return pending.then(
      (result) => {
        if (this.#ended) return DONE;
        if (result.done === true) {
          this.#end("done");
          return DONE;
        }
        this.#took = true;
        return result;
      },
      (err: unknown) => {
        throw this.#fail(err);
      },
    );
  }

  async return(): Promise<IteratorResult<T>> {
    if (this.#ended) return DONE;
    this.#ended = true;
    try {
      await this.#iterator?.return?.();
    } finally {
      this.#hooks.onEnd?.("return");
    }
    return DONE;
  }

  #fail(err: unknown): unknown {
    if (this.#ended) return err;
    this.#ended = true;
    try {
      return this.#hooks.onError ? this.#hooks.onError(err) : err;
    } finally {
      this.#hooks.onEnd?.("error");
    }
  }

  #end(how: "done"): void {
    this.#ended = true;
    this.#hooks.onEnd?.(how);
  }
}
