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
 * - the stream's end, or the consumer's `return()` or `throw()` (passed on
 *   as `return()`, so the producer's `finally` blocks run), calls `onEnd`;
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

/**
 * Wraps `messages` with `hooks`. Wrapping a stream this function returned,
 * before anyone read it, gives ONE iterator with both sets of hooks (the
 * interceptor chain wraps a stream once per layer; one layer per message is
 * cheaper than five), called in the order the nested wrappers would call
 * them: resumptions outermost first; errors, ends and returns innermost
 * first, each layer's `onError` seeing what the inner one returned. The
 * inner iterator is then used up: reading it throws.
 */
export function observeStream<T>(
  messages: AsyncIterable<T>,
  hooks: StreamHooks,
): AsyncIterableIterator<T> {
  if (messages instanceof ObservedStream) {
    const merged = (messages as ObservedStream<T>).mergeWith(hooks);
    if (merged) return merged;
  }
  return new ObservedStream(messages, [hooks]);
}

const DONE: IteratorReturnResult<undefined> = Object.freeze({ done: true, value: undefined });

class ObservedStream<T> implements AsyncIterableIterator<T> {
  readonly #messages: AsyncIterable<T>;
  /** Innermost first. */
  readonly #hooks: readonly StreamHooks[];
  #iterator: AsyncIterator<T> | undefined;
  /** A message was handed out; the next `next()` resumes the stream. */
  #took = false;
  #ended = false;
  /** An outer observeStream took this one over (see `mergeWith`). */
  #merged = false;

  constructor(messages: AsyncIterable<T>, hooks: readonly StreamHooks[]) {
    this.#messages = messages;
    this.#hooks = hooks;
  }

  /** This stream with `outer` hooks added, if nothing has read it yet; it is then used up. */
  mergeWith(outer: StreamHooks): ObservedStream<T> | undefined {
    if (this.#iterator !== undefined || this.#ended || this.#merged) return undefined;
    this.#merged = true;
    return new ObservedStream(this.#messages, [...this.#hooks, outer]);
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<T> {
    return this;
  }

  next(): Promise<IteratorResult<T>> {
    if (this.#merged)
      return Promise.reject(
        new Error("observeStream: this stream was wrapped again; read the wrapper"),
      );
    if (this.#ended) return Promise.resolve(DONE);
    if (this.#took) {
      this.#took = false;
      const hooks = this.#hooks;
      for (let i = hooks.length - 1; i >= 0; i--) hooks[i]?.onResume?.();
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
    if (this.#merged)
      throw new Error("observeStream: this stream was wrapped again; read the wrapper");
    if (this.#ended) return DONE;
    this.#ended = true;
    try {
      await this.#iterator?.return?.();
    } finally {
      for (const hooks of this.#hooks) hooks.onEnd?.("return");
    }
    return DONE;
  }

  /**
   * The consumer failed (the transport could not write a message: the
   * client is gone): the producer is stopped as by `return()` — its
   * `finally` blocks run and `onEnd("return")` is called — and `err` is
   * thrown back, as a generator without a `catch` would. Without this,
   * connect's `yield*` over this iterator would drop the error at the
   * delegation and never tell the producer, leaving it open for good.
   */
  async throw(err: unknown): Promise<IteratorResult<T>> {
    await this.return();
    throw err;
  }

  #fail(err: unknown): unknown {
    if (this.#ended) return err;
    this.#ended = true;
    let error = err;
    for (const hooks of this.#hooks) {
      try {
        if (hooks.onError) error = hooks.onError(error);
      } finally {
        hooks.onEnd?.("error");
      }
    }
    return error;
  }

  #end(how: "done"): void {
    this.#ended = true;
    for (const hooks of this.#hooks) hooks.onEnd?.(how);
  }
}
