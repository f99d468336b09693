/**
 * A FIFO with one asynchronous consumer, used between producers that must
 * never wait (fan-out, acks) and a consumer that may be slow (a client).
 *
 * `push` is synchronous and never blocks; bounding is the producer's job
 * (it checks `size` and ends the queue with `fail` when it is too long).
 * `fail` drops everything queued at once, so a cut-off consumer frees its
 * memory immediately, whether or not it ever reads again.
 */
export class EventQueue<T> {
  #items: T[] = [];
  #head = 0;
  #closed = false;
  #failed = false;
  #error: unknown;
  #waiter: { resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void } | undefined;

  /** Items queued and not yet taken. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** True once `close` or `fail` was called. */
  get ended(): boolean {
    return this.#closed || this.#failed;
  }

  /** Appends an item; ignored once the queue ended. */
  push(item: T): void {
    if (this.ended) return;
    const waiter = this.#waiter;
    if (waiter && this.size === 0) {
      this.#waiter = undefined;
      waiter.resolve({ value: item, done: false });
      return;
    }
    this.#items.push(item);
  }

  /** Ends the queue gracefully: what is queued is still delivered, then `done`. */
  close(): void {
    if (this.ended) return;
    this.#closed = true;
    if (this.size === 0) this.#settle();
  }

  /** Ends the queue now: queued items are dropped and `next` rejects with `error`. */
  fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#error = error;
    this.#items = [];
    this.#head = 0;
    this.#settle();
  }

  /** The next item; waits while the queue is empty. One consumer at a time. */
  next(): Promise<IteratorResult<T>> {
    if (this.#failed) return Promise.reject(this.#error);
    if (this.size > 0) return Promise.resolve({ value: this.#take(), done: false });
    if (this.#closed) return Promise.resolve({ value: undefined, done: true });
    if (this.#waiter) return Promise.reject(new Error("EventQueue supports one consumer"));
    return new Promise((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
  }

  #take(): T {
    const item = this.#items[this.#head] as T;
    this.#items[this.#head] = undefined as T;
    this.#head++;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  #settle(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    this.#waiter = undefined;
    if (this.#failed) waiter.reject(this.#error);
    else waiter.resolve({ value: undefined, done: true });
  }
}
