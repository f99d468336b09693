import { statSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { describe, expect, it } from "vitest";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../gen/health/v1/health_pb.js";
import { ROOT, spawnServer, tempDataDir } from "./support/server.js";

describe("npm start (scripts/start.mjs)", () => {
  it("runs the compiled server from dist/, rebuilt when stale, serving the API and the web app on one port", async () => {
    const dataDir = await tempDataDir();
    const server = await spawnServer({ DATA_DIR: dataDir }, ["scripts/start.mjs"]);
    try {
      const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
      expect((await health.check({})).status).toBe(ServingStatus.SERVING);
      const page = await fetch(`${server.url}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<div id="root">');
      // Whatever the sources' state was, the build the server ran is not
      // older than them.
      const built = statSync(join(ROOT, "dist", ".built")).mtimeMs;
      expect(built).toBeGreaterThanOrEqual(statSync(join(ROOT, "server", "src", "app.ts")).mtimeMs);
    } finally {
      server.child.kill("SIGTERM");
      expect(await server.exited).toBe(0);
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 240_000);

  it("takes a terminal's Ctrl-C (SIGINT to the whole process group) as one graceful shutdown: an open Watch gets its status, exit 0", async () => {
    const dataDir = await tempDataDir();
    try {
      for (let round = 0; round < 3; round++) {
        const server = await spawnServer({ DATA_DIR: dataDir }, ["scripts/start.mjs"], {
          detached: true,
        });
        const health = createClient(Health, createGrpcTransport({ baseUrl: server.url }));
        const seen: ServingStatus[] = [];
        let ended: unknown = "still open";
        const watching = (async () => {
          try {
            for await (const res of health.watch({})) seen.push(res.status);
            ended = "ok";
          } catch (err) {
            ended = err;
          }
        })();
        await expect.poll(() => seen.length).toBeGreaterThan(0);
        // What a terminal does on Ctrl-C: the signal goes to every process
        // of the foreground group, the launcher and the server alike.
        process.kill(-(server.child.pid as number), "SIGINT");
        expect(await server.exited).toBe(0);
        await watching;
        // The stream ended with a status (Unavailable: shutting down), not
        // a cut connection (a protocol error).
        const code = ended === "ok" ? Code.Unknown : ConnectError.from(ended).code;
        expect(ended === "ok" || code === Code.Unavailable).toBe(true);
        expect(seen[0]).toBe(ServingStatus.SERVING);
      }
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 240_000);
});
