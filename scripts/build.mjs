#!/usr/bin/env node
// `npm run build`: bundles the server into dist/ with esbuild —
//   dist/main.js  the entry point `npm start` runs
//   dist/lib.js   build(), openStore() … for the benchmark servers
// (shared code in dist/chunk-*.js, source maps next to them).
//
// Why a bundle: most of the server's start-up was Node resolving and loading
// the ~1,000 files of its dependencies one by one (1.1 s to the first healthy
// answer compiled file by file, 0.5 s bundled, on the bench machine).
// Type checking is tsc's job (`npm run typecheck`); esbuild only strips types.
//
// Left outside the bundle: native addons (better-sqlite3, @node-rs/argon2),
// packages that load files next to their own sources at run time (pino's
// worker threads, ioredis, @fastify/static), and the drivers loaded only when
// configured (pg, ioredis).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));

await build({
  absWorkingDir: root,
  entryPoints: { main: "server/src/main.ts", lib: "server/src/lib.ts" },
  outdir: "dist",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: true,
  external: [
    "better-sqlite3",
    "@node-rs/argon2",
    "pg",
    "pg-native",
    "ioredis",
    "pino",
    "pino-pretty",
    "thread-stream",
    "@fastify/static",
  ],
  // CommonJS dependencies inside an ES module bundle still call require().
  banner: {
    js: "import { createRequire as __switchboardRequire } from 'node:module'; const require = __switchboardRequire(import.meta.url);",
  },
  logLevel: "warning",
});
// start.mjs compares this stamp with the sources to know when to rebuild.
writeFileSync(join(root, "dist", ".built"), "");
