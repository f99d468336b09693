/**
 * Re-yields a streaming response's messages so an interceptor can act when
 * the stream fails or ends (cancellation included: the consumer's `return`
 * runs `finally`). This is how connect-es interceptors wrap streams.
 */
export interface StreamHooks {
  /** Called with whatever the stream threw; returns what to throw instead. */
  readonly onError?: (err: unknown) => unknown;
  /** Called once when the stream is done, however it ended. */
  readonly onEnd?: () => void;
}

/** Wraps `messages` with `hooks`. */
export async function* observeStream<T>(
  messages: AsyncIterable<T>,
  hooks: StreamHooks,
): AsyncGenerator<T> {
  try {
    yield* messages;
  } catch (err) {
    throw hooks.onError ? hooks.onError(err) : err;
  } finally {
    hooks.onEnd?.();
  }
}
