/**
 * The Switchboard modules the bench servers run: the compiled JavaScript in
 * dist/ (what `npm start` runs; `bench/run.mjs` compiles it first with
 * `npm run build`), typed as their TypeScript sources. Running the sources
 * through tsx instead would measure tsx's output (e.g. its `__name` helper
 * on every closure), not Switchboard's.
 */
const dist = (path: string) => new URL(`../../dist/${path}`, import.meta.url).href;

export const { build } = (await import(
  dist("server/src/app.js")
)) as typeof import("../../server/src/app.js");
export const { loadConfig } = (await import(
  dist("server/src/config.js")
)) as typeof import("../../server/src/config.js");
export const { openStore } = (await import(
  dist("server/src/storage/index.js")
)) as typeof import("../../server/src/storage/index.js");
export const { toUser, encodeCursor } = (await import(
  dist("server/src/services/user-service.js")
)) as typeof import("../../server/src/services/user-service.js");
