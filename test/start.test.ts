import { statSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
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
});
