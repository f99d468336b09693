import { describe, expect, it } from "vitest";
import { WakeSignal } from "./wake-signal.js";

describe("WakeSignal", () => {
  it("returns at once when a wake happened after the version was read", async () => {
    const signal = new WakeSignal();
    const seen = signal.version;
    signal.wake();
    await signal.waitAfter(seen, new AbortController().signal);
    expect(signal.waiting).toBe(0);
  });

  it("wakes every waiter once and forgets them", async () => {
    const signal = new WakeSignal();
    const controller = new AbortController();
    let woken = 0;
    const waits = [1, 2, 3].map(() =>
      signal.waitAfter(signal.version, controller.signal).then(() => woken++),
    );
    expect(signal.waiting).toBe(3);
    signal.wake();
    await Promise.all(waits);
    expect(woken).toBe(3);
    expect(signal.waiting).toBe(0);
  });

  it("rejects with the abort reason and removes the waiter", async () => {
    const signal = new WakeSignal();
    const controller = new AbortController();
    const wait = signal.waitAfter(signal.version, controller.signal);
    const reason = new Error("shutting down");
    controller.abort(reason);
    await expect(wait).rejects.toBe(reason);
    expect(signal.waiting).toBe(0);
  });

  it("rejects at once for an already-aborted signal", async () => {
    const signal = new WakeSignal();
    await expect(signal.waitAfter(signal.version, AbortSignal.abort("gone"))).rejects.toBe("gone");
  });
});
