#!/usr/bin/env node
// Summarises a V8 .cpuprofile (node --cpu-prof): self time by category, by
// package and by function, plus inclusive time of the app's own functions.
//
//   node bench/profile-summary.mjs <file.cpuprofile> [--from µs --to µs]
//        [--top 30] [--md out.md] [--json] [--title "…"] [--note "…"]
//
// --from/--to keep only the samples in that window of the profile's clock
// (the monotonic clock, as process.hrtime gives it: the bench server prints
// it on "mark"), so start-up and warm-up do not dilute the figures.
// Each sample counts for the time until the next sample (as DevTools does).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { SourceMap } from "node:module";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT_URL = new URL("../", import.meta.url).href;

/** Categories, first match wins; `test(frame)` sees { functionName, url, lineNumber }. */
const CATEGORIES = [
  ["GC", (f) => f.functionName === "(garbage collector)"],
  ["idle", (f) => f.functionName === "(idle)"],
  [
    "(program): VM and native code not attributed to a JS function",
    (f) => f.functionName === "(program)",
  ],
  [
    "AbortController / AbortSignal / DOMException / EventTarget (incl. makeTransferable)",
    (f) =>
      /internal\/(abort_controller|per_context\/domexception|event_target|worker\/js_transferable)/.test(
        f.url,
      ) || /^(AbortController|AbortSignal|DOMException)\b/.test(f.functionName),
  ],
  [
    "async generator helpers (__asyncGenerator & co. in @connectrpc's build)",
    (f) => isAsyncHelper(f),
  ],
  ["Headers (undici, WHATWG fetch Headers)", (f) => f.url.includes("internal/deps/undici")],
  ["URL (node:internal/url)", (f) => f.url.includes("internal/url")],
  ["http2 compat (Http2ServerRequest/Response)", (f) => f.url.includes("internal/http2/compat")],
  [
    "http2 core (sessions, streams, nghttp2 glue)",
    (f) => /internal\/http2\/(core|util)/.test(f.url),
  ],
  ["node streams", (f) => f.url.includes("internal/streams/")],
  [
    "node events (EventEmitter)",
    (f) => f.url === "node:events" || f.url.includes("internal/events"),
  ],
  [
    "promises, microtasks, timers, async hooks",
    (f) =>
      /internal\/(process\/task_queues|timers|async_hooks|process\/promises)/.test(f.url) ||
      f.url === "node:timers",
  ],
  [
    "crypto (node:crypto, e.g. jose's WebCrypto HMAC)",
    (f) => /^node:(crypto|internal\/crypto)/.test(f.url),
  ],
  [
    "module loader (tsx hooks thread messaging, node:internal/modules)",
    (f) => /^node:internal\/(modules|worker)/.test(f.url),
  ],
  ["net / sockets", (f) => /^node:(net|internal\/(net|stream_base_commons))/.test(f.url)],
  ["other node internals", (f) => f.url.startsWith("node:")],
  [
    "fastify (fastify, find-my-way, avvio, …)",
    (f) =>
      /node_modules\/(fastify|find-my-way|avvio|light-my-request|@fastify\/|fast-|abstract-logging|rfdc|toad-cache|process-warning|secure-json-parse)/.test(
        f.url,
      ),
  ],
  ["connect (@connectrpc/*)", (f) => f.url.includes("node_modules/@connectrpc/")],
  ["protobuf (@bufbuild/protobuf)", (f) => f.url.includes("node_modules/@bufbuild/protobuf")],
  [
    "storage (kysely, better-sqlite3)",
    (f) => /node_modules\/(kysely|better-sqlite3)\//.test(f.url),
  ],
  ["JWT (jose)", (f) => f.url.includes("node_modules/jose/")],
  [
    "rate limiter (rate-limiter-flexible)",
    (f) => f.url.includes("node_modules/rate-limiter-flexible/"),
  ],
  ["validation (zod)", (f) => f.url.includes("node_modules/zod/")],
  [
    "logging (pino)",
    (f) => /node_modules\/(pino|sonic-boom|thread-stream|on-exit-leak-free)/.test(f.url),
  ],
  ["uuid", (f) => f.url.includes("node_modules/uuid/")],
  ["Switchboard code (server/src)", (f) => f.url.includes("/server/src/")],
  ["generated code (gen/)", (f) => f.url.includes("/gen/")],
  ["bench code (bench/)", (f) => f.url.includes("/bench/")],
  [
    "tsx loader",
    (f) => f.url.includes("node_modules/tsx/") || f.url.includes("node_modules/esbuild/"),
  ],
  ["other packages", (f) => f.url.includes("node_modules/")],
  ["native functions (no JS source: builtins, C++ bindings, better-sqlite3)", (f) => f.url === ""],
  ["other", () => true],
];

const ASYNC_HELPERS = new Set([
  "__asyncGenerator",
  "__await",
  "__asyncValues",
  "__asyncDelegator",
  "awaitReturn",
  "verb",
  "resume",
  "step",
  "fulfill",
  "reject",
  "settle",
]);

/** tslib-style helpers emitted at the top of @connectrpc's ES2017 build files. */
function isAsyncHelper(f) {
  if (!f.url.includes("node_modules/@connectrpc/")) return false;
  return ASYNC_HELPERS.has(f.functionName) || (f.functionName === "" && f.lineNumber < 60);
}

/** The package (or area) a frame belongs to. */
function packageOf(f) {
  if (f.url === "") return f.functionName.startsWith("(") ? f.functionName : "(native)";
  if (f.url.startsWith("node:")) {
    const m = /^node:(?:internal\/(?:deps\/)?)?([^/]+)/.exec(f.url);
    return `node:${m ? m[1] : f.url}`;
  }
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(f.url);
  if (nm) return nm[1];
  if (f.url.startsWith(ROOT_URL)) {
    const rel = f.url.slice(ROOT_URL.length);
    const parts = rel.split("/");
    return `switchboard:${parts.slice(0, Math.min(parts.length - 1, 3)).join("/")}`;
  }
  return f.url;
}

function shortUrl(url) {
  if (url.startsWith(ROOT_URL)) return url.slice(ROOT_URL.length);
  return url;
}

function frameKey(f) {
  return `${f.functionName || "(anonymous)"} ${shortUrl(f.url)}:${f.lineNumber + 1}`;
}

/**
 * Frames in the server bundle (dist/*.js, npm run build) are mapped back to
 * their sources through the bundle's source maps, so a function of kysely
 * or of server/src is counted as such, not as "dist/chunk-….js".
 */
function remapBundleFrames(profile) {
  const maps = new Map();
  const mapFor = (url) => {
    if (!maps.has(url)) {
      const file = fileURLToPath(url);
      maps.set(
        url,
        existsSync(`${file}.map`)
          ? new SourceMap(JSON.parse(readFileSync(`${file}.map`, "utf8")))
          : null,
      );
    }
    return maps.get(url);
  };
  for (const node of profile.nodes) {
    const f = node.callFrame;
    if (!f.url.startsWith(`${ROOT_URL}dist/`) || f.lineNumber < 0) continue;
    const entry = mapFor(f.url)?.findEntry(f.lineNumber, f.columnNumber);
    if (!entry?.originalSource) continue;
    node.callFrame = {
      ...f,
      url: new URL(entry.originalSource, f.url).href,
      lineNumber: entry.originalLine,
      columnNumber: entry.originalColumn,
    };
  }
}

/** Summarises a parsed profile; `from`/`to` in the profile's µs clock. */
export function summarize(profile, { from = -Infinity, to = Infinity, top = 30 } = {}) {
  remapBundleFrames(profile);
  const byId = new Map();
  const parent = new Map();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const times = new Array(samples.length);
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    times[i] = t;
  }
  const self = new Map();
  const inclusive = new Map();
  let total = 0;
  let kept = 0;
  for (let i = 0; i < samples.length; i++) {
    if (times[i] < from || times[i] > to) continue;
    const next = i + 1 < samples.length ? times[i + 1] : profile.endTime;
    const dt = Math.max(0, Math.min(next, to) - times[i]);
    total += dt;
    kept++;
    const id = samples[i];
    self.set(id, (self.get(id) ?? 0) + dt);
    const seen = new Set();
    for (let n = id; n !== undefined; n = parent.get(n)) {
      const key = frameKey(byId.get(n).callFrame);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + dt);
    }
  }
  const add = (map, key, v) => map.set(key, (map.get(key) ?? 0) + v);
  const categories = new Map();
  const packages = new Map();
  const functions = new Map();
  for (const [id, us] of self) {
    const f = byId.get(id).callFrame;
    add(categories, CATEGORIES.find(([, test]) => test(f))[0], us);
    add(packages, packageOf(f), us);
    const key = frameKey(f);
    const prev = functions.get(key);
    functions.set(key, {
      name: f.functionName || "(anonymous)",
      location: `${shortUrl(f.url)}:${f.lineNumber + 1}`,
      us: (prev?.us ?? 0) + us,
    });
  }
  const pctOf = (us) => (total > 0 ? (100 * us) / total : 0);
  const sorted = (map) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .map(([name, us]) => ({ name, selfMs: us / 1000, selfPct: pctOf(us) }));
  const appInclusive = [...inclusive.entries()]
    .filter(([key]) => / (server\/src|bench\/servers)\//.test(key))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => ({ name: key, totalMs: us / 1000, totalPct: pctOf(us) }));
  const libInclusive = [...inclusive.entries()]
    .filter(([key]) => /node_modules\/(@connectrpc|fastify)/.test(key))
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([key, us]) => ({ name: key, totalMs: us / 1000, totalPct: pctOf(us) }));
  return {
    samples: kept,
    windowMs: total / 1000,
    categories: sorted(categories),
    packages: sorted(packages).slice(0, top),
    functions: [...functions.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({
        name: f.name,
        location: f.location,
        selfMs: f.us / 1000,
        selfPct: pctOf(f.us),
      })),
    appInclusive,
    libInclusive,
  };
}

const esc = (s) => String(s).replaceAll("|", "\\|");

/** The summary as Markdown. */
export function toMarkdown(summary, { title, note } = {}) {
  const out = [];
  out.push(`# ${title ?? "CPU profile summary"}`, "");
  if (note) out.push(note, "");
  out.push(
    `${summary.samples.toLocaleString("en-US")} samples over ${(summary.windowMs / 1000).toFixed(2)} s. Percentages are of all sampled time in the window (idle included). Self time = time with the function on top of the stack; categories assign every sample's self time to the first matching rule in bench/profile-summary.mjs.`,
    "",
  );
  out.push(
    "## Self time by category",
    "",
    "| category | self ms | self % |",
    "| --- | ---: | ---: |",
  );
  for (const c of summary.categories)
    out.push(`| ${esc(c.name)} | ${c.selfMs.toFixed(0)} | ${c.selfPct.toFixed(1)} |`);
  out.push(
    "",
    "## Self time by package",
    "",
    "| package | self ms | self % |",
    "| --- | ---: | ---: |",
  );
  for (const c of summary.packages)
    out.push(`| ${esc(c.name)} | ${c.selfMs.toFixed(0)} | ${c.selfPct.toFixed(1)} |`);
  out.push(
    "",
    "## Top functions by self time",
    "",
    "| function | location | self ms | self % |",
    "| --- | --- | ---: | ---: |",
  );
  for (const f of summary.functions) {
    out.push(
      `| \`${esc(f.name)}\` | ${esc(f.location)} | ${f.selfMs.toFixed(0)} | ${f.selfPct.toFixed(1)} |`,
    );
  }
  out.push(
    "",
    "## Inclusive time of Switchboard's own functions",
    "",
    "Time with the function anywhere on the stack (synchronous parts only: an async function counts while it runs, not while it awaits).",
    "",
    "| function | total ms | total % |",
    "| --- | ---: | ---: |",
  );
  for (const f of summary.appInclusive)
    out.push(`| \`${esc(f.name)}\` | ${f.totalMs.toFixed(0)} | ${f.totalPct.toFixed(1)} |`);
  out.push(
    "",
    "## Inclusive time of connect and fastify functions",
    "",
    "| function | total ms | total % |",
    "| --- | ---: | ---: |",
  );
  for (const f of summary.libInclusive)
    out.push(`| \`${esc(f.name)}\` | ${f.totalMs.toFixed(0)} | ${f.totalPct.toFixed(1)} |`);
  return `${out.join("\n")}\n`;
}

// CLI
if (process.argv[1] && import.meta.url === new URL(process.argv[1], "file://").href) {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      from: { type: "string" },
      to: { type: "string" },
      top: { type: "string", default: "30" },
      md: { type: "string" },
      json: { type: "boolean", default: false },
      title: { type: "string" },
      note: { type: "string" },
    },
  });
  const file = positionals[0];
  if (!file) {
    process.stderr.write(
      "usage: node bench/profile-summary.mjs <file.cpuprofile> [--from µs --to µs] [--md out.md] [--json]\n",
    );
    process.exit(2);
  }
  const profile = JSON.parse(readFileSync(file, "utf8"));
  const summary = summarize(profile, {
    from: values.from === undefined ? -Infinity : Number(values.from),
    to: values.to === undefined ? Infinity : Number(values.to),
    top: Number(values.top),
  });
  if (summary.samples === 0) {
    process.stderr.write("no samples in the window (is --from/--to on the profile's clock?)\n");
    process.exit(1);
  }
  const md = toMarkdown(summary, { title: values.title, note: values.note });
  if (values.md) writeFileSync(values.md, md);
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else if (!values.md) process.stdout.write(md);
}
