import { describe, expect, it } from "vitest";
import { EventQueue } from "./event-queue.js";

describe("EventQueue", () => {
  it("hands items over in order, waiting while it is empty", async () => {
    const queue = new EventQueue<number>();
    const waiting = queue.next();
    queue.push(1);
    queue.push(2);
    expect(await waiting).toEqual({ value: 1, done: false });
    expect(queue.size).toBe(1);
    expect(await queue.next()).toEqual({ value: 2, done: false });
  });

  it("delivers what is queued after close, then ends", async () => {
    const queue = new EventQueue<string>();
    queue.push("a");
    queue.close();
    queue.push("ignored");
    expect(await queue.next()).toEqual({ value: "a", done: false });
    expect((await queue.next()).done).toBe(true);
  });

  it("drops everything on fail and rejects the waiting and every later next", async () => {
    const queue = new EventQueue<number>();
    for (let i = 0; i < 1000; i++) queue.push(i);
    queue.fail(new Error("cut off"));
    expect(queue.size).toBe(0);
    await expect(queue.next()).rejects.toThrow("cut off");
    const idle = new EventQueue<number>();
    const waiting = idle.next();
    idle.fail(new Error("gone"));
    await expect(waiting).rejects.toThrow("gone");
  });

  it("keeps order across its internal compaction", async () => {
    const queue = new EventQueue<number>();
    const got: number[] = [];
    for (let round = 0; round < 5; round++) {
      for (let i = 0; i < 1500; i++) queue.push(round * 1500 + i);
      for (let i = 0; i < 1000; i++) got.push((await queue.next()).value as number);
    }
    while (queue.size > 0) got.push((await queue.next()).value as number);
    expect(got).toEqual(Array.from({ length: 7500 }, (_, i) => i));
  });
});
