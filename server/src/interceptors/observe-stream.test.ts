import { describe, expect, it } from "vitest";
import { observeStream, type StreamHooks } from "./observe-stream.js";

/** A producer that records what happened to it. */
function producer(items: number[], failAfter?: number) {
  const log: string[] = [];
  async function* gen() {
    try {
      for (const [i, item] of items.entries()) {
        if (i === failAfter) throw new Error("boom");
        yield item;
      }
      if (failAfter === items.length) throw new Error("boom");
    } finally {
      log.push("producer finally");
    }
  }
  return { log, messages: gen() };
}

function hooksLog(log: string[]) {
  return {
    onResume: () => log.push("resume"),
    onError: (err: unknown) => {
      log.push(`error ${(err as Error).message}`);
      return new Error(`wrapped ${(err as Error).message}`);
    },
    onEnd: (how: string) => log.push(`end ${how}`),
  };
}

describe("observeStream", () => {
  it("passes every message through, counts resumptions and ends once with done", async () => {
    const p = producer([1, 2, 3]);
    const seen: number[] = [];
    for await (const m of observeStream(p.messages, hooksLog(p.log))) seen.push(m);
    expect(seen).toEqual([1, 2, 3]);
    // Resumed after each message taken (the last one when asking for more).
    expect(p.log).toEqual(["resume", "resume", "resume", "producer finally", "end done"]);
  });

  it("throws what onError returns, then ends once with error", async () => {
    const p = producer([1, 2], 1);
    const it = observeStream(p.messages, hooksLog(p.log));
    expect(await it.next()).toEqual({ done: false, value: 1 });
    await expect(it.next()).rejects.toThrow("wrapped boom");
    expect(await it.next()).toEqual({ done: true, value: undefined });
    expect(p.log).toEqual(["resume", "producer finally", "error boom", "end error"]);
  });

  it("passes return() on to the producer (its finally runs) and ends once with return", async () => {
    const p = producer([1, 2, 3]);
    const it = observeStream(p.messages, hooksLog(p.log));
    expect(await it.next()).toEqual({ done: false, value: 1 });
    expect(await it.return?.()).toEqual({ done: true, value: undefined });
    expect(await it.next()).toEqual({ done: true, value: undefined });
    await it.return?.();
    expect(p.log).toEqual(["producer finally", "end return"]);
  });

  it("a break in for await is a return()", async () => {
    const p = producer([1, 2, 3]);
    for await (const m of observeStream(p.messages, hooksLog(p.log))) if (m === 2) break;
    expect(p.log).toEqual(["resume", "producer finally", "end return"]);
  });

  it("ends even when returned before the first message was asked for", async () => {
    const p = producer([1]);
    const it = observeStream(p.messages, hooksLog(p.log));
    await it.return?.();
    expect(p.log).toEqual(["end return"]);
  });

  it("an error thrown synchronously by the source goes through onError too", async () => {
    const log: string[] = [];
    const broken: AsyncIterable<number> = {
      [Symbol.asyncIterator]() {
        throw new Error("no iterator");
      },
    };
    await expect(observeStream(broken, hooksLog(log)).next()).rejects.toThrow(
      "wrapped no iterator",
    );
    expect(log).toEqual(["error no iterator", "end error"]);
  });

  describe("wrapped again (the interceptor chain): one iterator, the nested wrappers' hook order", () => {
    /** The nested async generators observeStream replaced, as the reference. */
    async function* reference<T>(
      messages: AsyncIterable<T>,
      hooks: StreamHooks,
    ): AsyncGenerator<T> {
      try {
        for await (const m of messages) {
          yield m;
          hooks.onResume?.();
        }
      } catch (err) {
        throw hooks.onError ? hooks.onError(err) : err;
      } finally {
        hooks.onEnd?.("done");
      }
    }
    const layered = (log: string[], name: string): StreamHooks => ({
      onResume: () => log.push(`${name} resume`),
      onError: (err) => {
        log.push(`${name} error ${(err as Error).message}`);
        return new Error(`${name}(${(err as Error).message})`);
      },
      onEnd: () => log.push(`${name} end`),
    });
    type Wrap = (m: AsyncIterable<number>, h: StreamHooks) => AsyncIterable<number>;
    const scenario = async (wrap: Wrap, items: number[], failAfter?: number, stopAt?: number) => {
      const p = producer(items, failAfter);
      let stream: AsyncIterable<number> = p.messages;
      for (const name of ["inner", "middle", "outer"]) stream = wrap(stream, layered(p.log, name));
      try {
        for await (const m of stream) {
          p.log.push(`got ${m}`);
          if (m === stopAt) break;
        }
      } catch (err) {
        p.log.push(`threw ${(err as Error).message}`);
      }
      // The reference's onEnd cannot say how; compare the order only.
      return p.log.map((line) => line.replace(/ end.*$/, " end"));
    };

    it("completes, fails and stops as three nested generators do", async () => {
      const ours: Wrap = (m, h) => observeStream(m, h);
      const theirs: Wrap = (m, h) => reference(m, h);
      for (const [items, failAfter, stopAt] of [
        [[1, 2, 3], undefined, undefined],
        [[1, 2, 3], 2, undefined],
        [[1, 2, 3], 0, undefined],
        [[1, 2, 3], undefined, 2],
        [[], undefined, undefined],
      ] as const) {
        expect(await scenario(ours, [...items], failAfter, stopAt)).toEqual(
          await scenario(theirs, [...items], failAfter, stopAt),
        );
      }
    });

    it("the stream it wrapped is used up; one already being read is wrapped, not merged", async () => {
      const p = producer([1, 2]);
      const inner = observeStream(p.messages, {});
      const outer = observeStream(inner, {});
      await expect(inner.next()).rejects.toThrow("wrapped again");
      expect(await outer.next()).toEqual({ done: false, value: 1 });

      const q = producer([1, 2]);
      const read = observeStream(q.messages, {});
      expect(await read.next()).toEqual({ done: false, value: 1 });
      const around = observeStream(read, {});
      expect(await around.next()).toEqual({ done: false, value: 2 });
    });
  });
});
