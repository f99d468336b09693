import { describe, expect, it } from "vitest";
import { HealthState, ServingStatus } from "../protocol/health.js";
import { startStoreProbe } from "./store-probe.js";

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const silent = { info: () => undefined, error: () => undefined };

/** A store whose ping fails, hangs or answers as the test says. */
function switchableStore() {
  const state = { mode: "up" as "up" | "down" | "hang" };
  return {
    state,
    ping: () =>
      state.mode === "up"
        ? Promise.resolve()
        : state.mode === "down"
          ? Promise.reject(new Error("connect ECONNREFUSED"))
          : new Promise<void>(() => undefined),
  };
}

describe("startStoreProbe", () => {
  it("turns every service NOT_SERVING while the store fails, and SERVING again once it answers", async () => {
    const health = new HealthState(["a.A", "b.B"]);
    const store = switchableStore();
    const probe = startStoreProbe({ store, health, logger: silent, intervalMs: 20 });
    try {
      store.state.mode = "down";
      await expect.poll(() => health.get(""), { timeout: 500 }).toBe(ServingStatus.NOT_SERVING);
      expect([...health.entries()].map(([, s]) => s)).toEqual([
        ServingStatus.NOT_SERVING,
        ServingStatus.NOT_SERVING,
        ServingStatus.NOT_SERVING,
      ]);
      expect(health.downDependencies()).toEqual(["store"]);
      store.state.mode = "up";
      await expect.poll(() => health.get("a.A"), { timeout: 500 }).toBe(ServingStatus.SERVING);
    } finally {
      probe.stop();
    }
  });

  it("counts a ping that hangs past its timeout as a failure", async () => {
    const health = new HealthState([]);
    const store = switchableStore();
    store.state.mode = "hang";
    const probe = startStoreProbe({ store, health, logger: silent, intervalMs: 20, timeoutMs: 60 });
    try {
      await expect.poll(() => health.get(""), { timeout: 500 }).toBe(ServingStatus.NOT_SERVING);
    } finally {
      probe.stop();
    }
  });

  it("never brings back a server that is shutting down", async () => {
    const health = new HealthState(["a.A"]);
    health.setDependency("store", false);
    health.setAllNotServing();
    health.setDependency("store", true);
    expect(health.get("")).toBe(ServingStatus.NOT_SERVING);
    expect(health.get("a.A")).toBe(ServingStatus.NOT_SERVING);
  });
});

describe("HealthState.watch", () => {
  it("yields each dependency transition to an open watch", async () => {
    const health = new HealthState(["a.A"]);
    const controller = new AbortController();
    const seen: ServingStatus[] = [];
    const watching = (async () => {
      for await (const status of health.watch("a.A", controller.signal)) seen.push(status);
    })().catch(() => undefined);
    await pause(5);
    health.setDependency("store", false);
    await pause(5);
    health.setDependency("store", true);
    await pause(5);
    controller.abort();
    await watching;
    expect(seen).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING, ServingStatus.SERVING]);
  });
});
