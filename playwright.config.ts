import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defineConfig } from "@playwright/test";
import type { AppOptions } from "./e2e/fixtures.js";
import { E2E_ENV, E2E_PORT } from "./e2e/support/env.js";

/**
 * End-to-end tests of the web app against the real server, in Debian's
 * Chromium, once per browser protocol (projects `connect` and `grpc-web`).
 * Run with `npm run test:e2e` (installs Chromium when missing and builds
 * the app first) or `npx playwright test` once both are there.
 */

// One fresh data dir per run; set once in the runner process, inherited by workers.
process.env.E2E_DATA_DIR ??= mkdtempSync(join(tmpdir(), "switchboard-e2e-"));

const baseURL = `http://127.0.0.1:${E2E_PORT}`;

export default defineConfig<AppOptions>({
  testDir: "e2e",
  outputDir: "test-results",
  timeout: 45_000,
  expect: { timeout: 10_000 },
  fullyParallel: true,
  forbidOnly: !!process.env.CI,
  retries: process.env.CI ? 1 : 0,
  workers: 2,
  reporter: [["list"], ["html", { open: "never", outputFolder: "playwright-report" }]],
  use: {
    baseURL,
    trace: "retain-on-failure",
    screenshot: "only-on-failure",
    launchOptions: {
      executablePath: "/usr/bin/chromium",
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
    },
  },
  projects: [
    { name: "connect", use: { transport: "connect" } },
    { name: "grpc-web", use: { transport: "grpc-web" } },
  ],
  webServer: {
    command: "node e2e/support/web-server.mjs",
    // The app's index page: answered once the server listens and serves web/dist.
    url: `${baseURL}/`,
    reuseExistingServer: false,
    timeout: 120_000,
    stdout: "ignore",
    stderr: "pipe",
    gracefulShutdown: { signal: "SIGTERM", timeout: 10_000 },
    env: { ...E2E_ENV, PORT: String(E2E_PORT), DATA_DIR: process.env.E2E_DATA_DIR },
  },
});
