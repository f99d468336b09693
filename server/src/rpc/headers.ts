/**
 * The `Headers` the engine hands to interceptors and handlers.
 *
 * Why not `new Headers()`: Node's Headers (undici) runs WebIDL conversions
 * in JavaScript on every call — a character loop over each name and value
 * (a 300-character bearer token included), then validation and
 * normalisation — and sorts its entries on every iteration. A unary call
 * makes three of them (request, response, trailer) and the interceptor
 * chain reads and writes several entries; in the unary profile that was
 * about 10 µs of an 85–130 µs call. No library offers a cheaper Headers, so
 * this is a small one of our own, with the Fetch standard's observable
 * behaviour (pinned against undici's by server/src/rpc/headers.test.ts):
 * - names are case-insensitive and must be HTTP tokens, values are trimmed
 *   of HTTP whitespace and may not contain NUL, CR or LF, and neither may
 *   hold a character above U+00FF (TypeError, as undici throws);
 * - `get` joins repeated values with ", "; `getSetCookie` keeps them apart;
 * - iteration is by lower-case name in sorted order, `set-cookie` values one
 *   by one, the others combined.
 *
 * `FastHeaders.fromNode(dict)` is a view of Node's incoming headers: reads
 * go straight to Node's object (pseudo-headers such as `:path` are not
 * metadata and never appear), and the first write or iteration copies it.
 */

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const LOWER_TOKEN = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** HTTP whitespace at either end of a value. */
const EDGE_WHITESPACE = /^[\t\n\r ]+|[\t\n\r ]+$/g;
const FORBIDDEN_IN_VALUE = /[\0\r\n]/;
const NOT_BYTE = /[^\0-\xff]/;
/** Printable ASCII without spaces at either end: nothing to check or trim (the usual value). */
const PLAIN_VALUE = /^(?:[!-~](?:[ -~]*[!-~])?)?$/;

/** Node's incoming header object (HTTP/1.1 or HTTP/2; names in lower case). */
export type NodeIncomingHeaders = NodeJS.Dict<string | string[] | number>;

type ForEachCallback = (value: string, key: string, parent: Headers) => void;

/** HTTP whitespace (tab, LF, CR, space) at either end (a regex would scan the whole value). */
function hasEdgeWhitespace(value: string): boolean {
  if (value.length === 0) return false;
  const first = value.charCodeAt(0);
  const last = value.charCodeAt(value.length - 1);
  return (
    first === 32 ||
    first === 9 ||
    first === 10 ||
    first === 13 ||
    last === 32 ||
    last === 9 ||
    last === 10 ||
    last === 13
  );
}

function byteString(value: unknown, what: string): string {
  const s = String(value);
  const bad = NOT_BYTE.exec(s);
  if (bad) {
    throw new TypeError(
      `Cannot convert ${what} to a ByteString because the character at index ${bad.index} has a value of ${s.charCodeAt(bad.index)} which is greater than 255.`,
    );
  }
  return s;
}

function normalizeName(name: unknown, method: string): string {
  if (typeof name === "string" && LOWER_TOKEN.test(name)) return name;
  const s = byteString(name, "argument");
  if (!TOKEN.test(s)) throw new TypeError(`Headers.${method}: "${s}" is an invalid header name.`);
  return s.toLowerCase();
}

function normalizeValue(value: unknown, method: string): string {
  if (typeof value === "string" && PLAIN_VALUE.test(value)) return value;
  const s = byteString(value, "argument").replace(EDGE_WHITESPACE, "");
  if (FORBIDDEN_IN_VALUE.test(s)) {
    throw new TypeError(`Headers.${method}: "${s}" is an invalid header value.`);
  }
  return s;
}

/** A `Headers` with the Fetch standard's behaviour and less per-call work (see above). */
export class FastHeaders implements Headers {
  /** Values by lower-case name, in insertion order; `set-cookie` keeps each value. */
  #entries: Map<string, string[]> | undefined;
  /** Node's incoming headers, until the first write or iteration copies them. */
  #node: NodeIncomingHeaders | undefined;

  constructor(init?: Readonly<Record<string, string>>) {
    if (init === undefined) return;
    for (const name in init) this.append(name, init[name] as string);
  }

  /** A view of Node's incoming headers (every header but the `:` pseudo-headers). */
  static fromNode(headers: NodeIncomingHeaders): FastHeaders {
    const out = new FastHeaders();
    out.#node = headers;
    return out;
  }

  get(name: string): string | null {
    const node = this.#node;
    if (node !== undefined && typeof name === "string" && LOWER_TOKEN.test(name)) {
      const value = node[name];
      if (value === undefined) return null;
      if (typeof value === "string" && !hasEdgeWhitespace(value)) return value;
    }
    const values = this.#map().get(normalizeName(name, "get"));
    return values === undefined ? null : values.join(", ");
  }

  has(name: string): boolean {
    const node = this.#node;
    if (node !== undefined && typeof name === "string" && LOWER_TOKEN.test(name)) {
      const value = node[name];
      // (HTTP/1.1's header object has a prototype: "constructor" is not a header.)
      if (value === undefined) return false;
      if (typeof value === "string") return true;
    }
    return this.#map().has(normalizeName(name, "has"));
  }

  getSetCookie(): string[] {
    return [...(this.#map().get("set-cookie") ?? [])];
  }

  set(name: string, value: string): void {
    const key = normalizeName(name, "set");
    this.#map().set(key, [normalizeValue(value, "set")]);
  }

  append(name: string, value: string): void {
    const key = normalizeName(name, "append");
    const v = normalizeValue(value, "append");
    const map = this.#map();
    const values = map.get(key);
    if (values === undefined) map.set(key, [v]);
    else values.push(v);
  }

  delete(name: string): void {
    this.#map().delete(normalizeName(name, "delete"));
  }

  forEach(callback: ForEachCallback, thisArg?: unknown): void {
    for (const [key, value] of this.#sorted()) callback.call(thisArg, value, key, this);
  }

  *entries(): IterableIterator<[string, string]> {
    yield* this.#sorted();
  }

  *keys(): IterableIterator<string> {
    for (const [key] of this.#sorted()) yield key;
  }

  *values(): IterableIterator<string> {
    for (const [, value] of this.#sorted()) yield value;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  get [Symbol.toStringTag](): string {
    return "Headers";
  }

  /** The entries as the standard iterates them: sorted names, set-cookie values apart. */
  #sorted(): Array<[string, string]> {
    const map = this.#map();
    const out: Array<[string, string]> = [];
    for (const key of [...map.keys()].sort()) {
      const values = map.get(key) as string[];
      if (key === "set-cookie") for (const v of values) out.push([key, v]);
      else out.push([key, values.join(", ")]);
    }
    return out;
  }

  #map(): Map<string, string[]> {
    let map = this.#entries;
    if (map !== undefined) return map;
    map = new Map();
    this.#entries = map;
    const node = this.#node;
    this.#node = undefined;
    if (node !== undefined) {
      for (const key in node) {
        if (key.charCodeAt(0) === 58 /* ":" */) continue;
        const value = node[key];
        if (value === undefined) continue;
        if (Array.isArray(value)) for (const v of value) this.append(key, v);
        else this.append(key, String(value));
      }
    }
    return map;
  }
}
