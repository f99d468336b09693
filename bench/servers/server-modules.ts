/**
 * The Switchboard modules the bench servers run: the bundle in dist/ (the
 * same build `npm start` runs; `bench/run.mjs` builds it first with
 * `npm run build`), typed as their TypeScript sources. Running the sources
 * through tsx instead would measure tsx's output (e.g. its `__name` helper
 * on every closure), not Switchboard's.
 */
export const { build, loadConfig, openStore, toUser, encodeCursor } = (await import(
  new URL("../../dist/lib.js", import.meta.url).href
)) as typeof import("../../server/src/lib.js");
