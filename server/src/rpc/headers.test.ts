import { describe, expect, it } from "vitest";
import { FastHeaders, type NodeIncomingHeaders } from "./headers.js";

/**
 * FastHeaders must behave as Node's own Headers (undici) does: the same
 * operations on both must give the same answers, the same contents and the
 * same exceptions.
 */

type Op =
  | readonly ["set" | "append", string, string]
  | readonly ["delete" | "get" | "has", string]
  | readonly ["getSetCookie" | "entries" | "keys" | "values" | "forEach" | "spread"];

function apply(h: Headers, op: Op): unknown {
  try {
    switch (op[0]) {
      case "set":
        return h.set(op[1], op[2]);
      case "append":
        return h.append(op[1], op[2]);
      case "delete":
        return h.delete(op[1]);
      case "get":
        return h.get(op[1]);
      case "has":
        return h.has(op[1]);
      case "getSetCookie":
        return h.getSetCookie();
      case "entries":
        return [...h.entries()];
      case "keys":
        return [...h.keys()];
      case "values":
        return [...h.values()];
      case "forEach": {
        const seen: unknown[] = [];
        h.forEach((value, key, parent) => {
          seen.push([key, value, parent === h]);
        });
        return seen;
      }
      case "spread":
        return [...h];
    }
  } catch (err) {
    return { threw: (err as Error).constructor.name };
  }
}

const names = ["a", "A", "x-request-id", "X-Request-Id", "set-cookie", "Set-Cookie", "grpc-status"];
const values = ["1", " 2 ", "\tv\t", "a=1; Path=/", "", "  ", "é", "x, y"];
const invalid: Op[] = [
  ["set", "bad name", "x"],
  ["set", ":path", "/"],
  ["set", "", "x"],
  ["append", "a", "x\ny"],
  ["append", "a", "x\0y"],
  ["set", "a", "€"],
  ["get", "bad name"],
  ["has", ":path"],
  ["delete", "a b"],
  ["get", "ünicode"],
];

/** A deterministic pseudo-random sequence (so a failure reproduces). */
function* random(seed: number): Generator<number> {
  let s = seed;
  for (;;) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    yield s;
  }
}

function randomOps(seed: number, count: number): Op[] {
  const r = random(seed);
  const pick = <T>(list: readonly T[]): T => list[(r.next().value as number) % list.length] as T;
  const ops: Op[] = [];
  for (let i = 0; i < count; i++) {
    const kind = pick([
      "set",
      "append",
      "append",
      "delete",
      "get",
      "has",
      "getSetCookie",
      "entries",
      "forEach",
      "invalid",
    ] as const);
    if (kind === "set" || kind === "append") ops.push([kind, pick(names), pick(values)]);
    else if (kind === "delete" || kind === "get" || kind === "has") ops.push([kind, pick(names)]);
    else if (kind === "invalid") ops.push(pick(invalid));
    else ops.push([kind]);
  }
  return ops;
}

function expectSame(make: () => [Headers, Headers], ops: readonly Op[]): void {
  const [ours, theirs] = make();
  for (const op of ops) {
    expect(apply(ours, op), JSON.stringify(op)).toEqual(apply(theirs, op));
  }
  expect([...ours]).toEqual([...theirs]);
}

describe("FastHeaders", () => {
  it("answers every operation of 200 random sequences as undici's Headers does", () => {
    for (let seed = 1; seed <= 200; seed++) {
      expectSame(() => [new FastHeaders(), new Headers()], randomOps(seed, 40));
    }
  });

  it("takes an initial record like new Headers(record)", () => {
    const init = { "Content-Type": "application/grpc", "grpc-status": "0" };
    expectSame(
      () => [new FastHeaders(init), new Headers(init)],
      [["spread"], ["get", "content-type"]],
    );
  });

  it("rejects what undici rejects, with a TypeError", () => {
    for (const op of invalid) {
      expect(apply(new FastHeaders(), op), JSON.stringify(op)).toEqual({ threw: "TypeError" });
    }
  });

  describe("fromNode: a view of Node's incoming headers", () => {
    const incoming: NodeIncomingHeaders = {
      ":path": "/switchboard.user.v1.UserService/GetUser",
      ":method": "POST",
      "content-type": "application/grpc",
      authorization: `Bearer ${"t".repeat(300)}`,
      "x-padded": "  spaced\t",
      "set-cookie": ["a=1", "b=2"],
      "x-number": 7,
    };
    /** What connect-node makes of the same object (nodeHeaderToWebHeader). */
    const reference = () => {
      const h = new Headers();
      for (const [key, value] of Object.entries(incoming)) {
        if (key.startsWith(":") || value === undefined) continue;
        if (Array.isArray(value)) for (const v of value) h.append(key, v);
        else h.append(key, String(value));
      }
      return h;
    };

    it("reads, writes and iterates as a Headers built from them", () => {
      const reads: Op[] = [
        ["get", "authorization"],
        ["get", "Authorization"],
        ["get", "x-padded"],
        ["get", "set-cookie"],
        ["get", "x-number"],
        ["get", "absent"],
        ["get", ":path"],
        ["has", "content-type"],
        ["has", ":method"],
        ["has", "constructor"],
        ["get", "constructor"],
        ["getSetCookie"],
      ];
      // Each read on a fresh view (a read that falls back to a copy would
      // hide the view's answers for the reads after it), then in sequence.
      for (const read of reads)
        expectSame(() => [FastHeaders.fromNode(incoming), reference()], [read]);
      expectSame(() => [FastHeaders.fromNode(incoming), reference()], reads);
      expectSame(
        () => [FastHeaders.fromNode(incoming), reference()],
        [["set", "x-request-id", "abc"], ["delete", "authorization"], ...reads, ["spread"]],
      );
      expectSame(() => [FastHeaders.fromNode(incoming), reference()], [["spread"], ...reads]);
    });

    it("never writes to Node's object", () => {
      const copy = { ...incoming };
      const h = FastHeaders.fromNode(incoming);
      h.set("authorization", "changed");
      h.append("x-new", "1");
      h.delete("content-type");
      expect(incoming).toEqual(copy);
      expect(h.get("authorization")).toBe("changed");
    });

    it("an HTTP/1.1 header object's prototype names are not headers", () => {
      const h1: NodeIncomingHeaders = Object.assign({}, { host: "localhost" });
      const h = FastHeaders.fromNode(h1);
      expect(h.has("constructor")).toBe(false);
      expect(h.get("tostring")).toBeNull();
      expect(h.get("host")).toBe("localhost");
    });
  });

  it("copies into new Headers() like a Headers does", () => {
    const ours = new FastHeaders({ a: "1" });
    ours.append("set-cookie", "x=1");
    ours.append("set-cookie", "y=2");
    expect([...new Headers(ours)]).toEqual([
      ["a", "1"],
      ["set-cookie", "x=1"],
      ["set-cookie", "y=2"],
    ]);
    expect(Object.prototype.toString.call(ours)).toBe("[object Headers]");
  });
});
