/**
 * A versioned wake-up signal for live feeds that read from a store.
 *
 * The store is the source of truth; this only tells waiting readers that
 * something changed. A reader notes `version` BEFORE it queries, and after
 * an exhausted query waits with `waitAfter(version)`: if a change happened in
 * between, the wait returns at once, so no wake-up is ever lost, and nothing
 * is buffered per reader, so a slow reader costs no memory.
 */
export class WakeSignal {
  #version = 0;
  #waiters = new Set<() => void>();

  /** Increases on every `wake()`. */
  get version(): number {
    return this.#version;
  }

  /** Announces a change to every waiter. */
  wake(): void {
    this.#version++;
    const waiters = this.#waiters;
    this.#waiters = new Set();
    for (const resolve of waiters) resolve();
  }

  /**
   * Resolves once `version` has moved past `seen` (at once if it already
   * has); rejects with the signal's reason when `signal` aborts first.
   */
  waitAfter(seen: number, signal: AbortSignal): Promise<void> {
    if (this.#version !== seen) return Promise.resolve();
    if (signal.aborted) return Promise.reject(signal.reason);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        this.#waiters.delete(wake);
        reject(signal.reason);
      };
      const wake = () => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      this.#waiters.add(wake);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Number of readers currently waiting (for tests and metrics). */
  get waiting(): number {
    return this.#waiters.size;
  }
}
