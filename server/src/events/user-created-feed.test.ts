import { describe, expect, it } from "vitest";
import { LocalBus } from "../chat/bus.js";
import { UserCreatedFeed } from "./user-created-feed.js";
import { WakeSignal } from "./wake-signal.js";

const silent = { warn: () => undefined };

describe("UserCreatedFeed", () => {
  it("wakes the other instances' streams when one announces a registration on the shared bus", async () => {
    const bus = new LocalBus();
    const store = { lastUserSeq: async () => 0 };
    const here = new WakeSignal();
    const there = new WakeSignal();
    const a = new UserCreatedFeed({ bus, store, signal: here, logger: silent, pollMs: 60_000 });
    const b = new UserCreatedFeed({ bus, store, signal: there, logger: silent, pollMs: 60_000 });
    try {
      const waiting = there.waitAfter(there.version, AbortSignal.timeout(1000));
      a.announce(7);
      await expect(waiting).resolves.toBeUndefined();
      // The announcer's own process was woken by UserService; its echo wakes nobody again.
      expect(here.version).toBe(0);
      // An old or repeated announcement is not news.
      const before = there.version;
      a.announce(7);
      a.announce(3);
      expect(there.version).toBe(before);
    } finally {
      a.close();
      b.close();
    }
  });

  it("finds a registration the bus never announced by polling while a stream waits", async () => {
    let last = 0;
    const signal = new WakeSignal();
    const feed = new UserCreatedFeed({
      bus: new LocalBus(),
      store: { lastUserSeq: async () => last },
      signal,
      logger: silent,
      pollMs: 20,
    });
    try {
      const seen = signal.version;
      const waiting = signal.waitAfter(seen, AbortSignal.timeout(1000));
      last = 5;
      await expect(waiting).resolves.toBeUndefined();
      expect(signal.version).toBe(seen + 1);
    } finally {
      feed.close();
    }
  });
});
