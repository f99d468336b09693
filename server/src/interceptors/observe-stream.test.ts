import { describe, expect, it } from "vitest";
import { observeStream } from "./observe-stream.js";

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
});
