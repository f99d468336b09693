import {
  type BrowserContext,
  type BrowserContextOptions,
  test as base,
  expect,
  type Page,
} from "@playwright/test";
import { api } from "./support/api.js";
import { ServerProcess } from "./support/server-process.js";

/**
 * Fixtures shared by every spec:
 * - `transport` (project option): the browser protocol; `app.goto` adds
 *   `?transport=` so each spec runs once per protocol;
 * - every page of every context a test opens is watched: console errors and
 *   warnings and uncaught exceptions fail the test, and every RPC must use
 *   the project's protocol (content-type);
 * - `api`: connect-node clients of the main server, for seeding and peers;
 * - `newContext`: another browser (context) with the same watching;
 * - `startServer`: a server of the test's own (port, data dir, settings),
 *   stopped and deleted after the test.
 */

export type TransportKind = "connect" | "grpc-web";

export interface AppOptions {
  transport: TransportKind;
  /** Allow the browser's own network-failure console lines (server restarts). */
  allowNetworkErrors: boolean;
  /** Require every RPC to use `transport` (off only for the protocol-switch test). */
  checkProtocol: boolean;
}

interface AppFixtures {
  api: ReturnType<typeof api>;
  app: App;
  newContext: (options?: BrowserContextOptions) => Promise<BrowserContext>;
  /** Problems found by the page watchers; checked after each test. */
  problems: string[];
  startServer: (env?: Record<string, string>) => Promise<ServerProcess>;
}

const RPC_PATH = /^\/(switchboard|grpc)\./;

const CONTENT_TYPES: Record<TransportKind, RegExp> = {
  connect: /^application\/(connect\+)?json/,
  "grpc-web": /^application\/grpc-web(\+proto)?/,
};

/** What Chromium itself logs for responses and failures: not the app's doing. */
const BROWSER_NETWORK_LINE = /^Failed to load resource: /;
const RPC_ERROR_STATUS = /the server responded with a status of (4\d\d|5\d\d)/;

export class App {
  constructor(
    readonly transport: TransportKind,
    readonly baseURL: string,
  ) {}

  /** The app's URL for `path` on `server` (default: the main server), with `?transport=`. */
  url(path: string, server = this.baseURL): string {
    const url = new URL(path, server);
    url.searchParams.set("transport", this.transport);
    return url.toString();
  }

  async goto(page: Page, path: string, server?: string): Promise<void> {
    await page.goto(this.url(path, server));
  }

  /** Signs in through the login form and waits for the People page. */
  async login(
    page: Page,
    username: string,
    password: string,
    server?: string,
    next = "/",
  ): Promise<void> {
    await this.goto(
      page,
      next === "/" ? "/login" : `/login?next=${encodeURIComponent(next)}`,
      server,
    );
    await page.getByLabel("Username or email").fill(username);
    await page.getByLabel("Password").fill(password);
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
  }
}

/** Watches a context's pages for console problems and off-protocol RPCs. */
function watch(
  context: BrowserContext,
  options: Pick<AppOptions, "transport" | "allowNetworkErrors" | "checkProtocol">,
  problems: string[],
): void {
  const { transport, allowNetworkErrors, checkProtocol } = options;
  const onPage = (page: Page) => {
    page.on("console", (msg) => {
      if (msg.type() !== "error" && msg.type() !== "warning") return;
      const text = msg.text();
      const where = msg.location().url ?? "";
      if (BROWSER_NETWORK_LINE.test(text)) {
        const path = where ? new URL(where).pathname : "";
        // The Connect protocol answers errors with HTTP 4xx/5xx statuses,
        // which Chromium logs by itself; expected errors are part of tests.
        if (RPC_PATH.test(path) && RPC_ERROR_STATUS.test(text)) return;
        if (allowNetworkErrors && RPC_PATH.test(path)) return;
      }
      if (allowNetworkErrors && /net::ERR_|Failed to fetch/.test(text)) return;
      problems.push(`console.${msg.type()}: ${text} (${where})`);
    });
    page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
    page.on("request", (req) => {
      const url = new URL(req.url());
      if (!checkProtocol || !RPC_PATH.test(url.pathname) || req.method() !== "POST") return;
      const type = req.headers()["content-type"] ?? "";
      if (!CONTENT_TYPES[transport].test(type)) {
        problems.push(`${url.pathname} sent as ${type}, expected ${transport}`);
      }
    });
  };
  context.on("page", onPage);
  for (const page of context.pages()) onPage(page);
}

export const test = base.extend<AppFixtures & AppOptions>({
  transport: ["connect", { option: true }],
  allowNetworkErrors: [false, { option: true }],
  checkProtocol: [true, { option: true }],

  // biome-ignore lint/correctness/noEmptyPattern: Playwright reads fixture names from this pattern
  problems: async ({}, use) => {
    const problems: string[] = [];
    await use(problems);
    expect(problems, "console errors/warnings or off-protocol RPCs").toEqual([]);
  },

  // Pages close before the test's own servers stop (startServer is set up
  // first, so torn down last): no stream sees its server vanish.
  context: async (
    { context, transport, allowNetworkErrors, checkProtocol, problems, startServer: _ },
    use,
  ) => {
    watch(context, { transport, allowNetworkErrors, checkProtocol }, problems);
    await use(context);
    await context.close();
  },

  newContext: async (
    { browser, baseURL, transport, allowNetworkErrors, checkProtocol, problems, startServer: _ },
    use,
  ) => {
    const contexts: BrowserContext[] = [];
    await use(async (options) => {
      const context = await browser.newContext({ baseURL, ...options });
      watch(context, { transport, allowNetworkErrors, checkProtocol }, problems);
      contexts.push(context);
      return context;
    });
    for (const c of contexts) await c.close();
  },

  // biome-ignore lint/correctness/noEmptyPattern: Playwright reads fixture names from this pattern
  startServer: async ({}, use) => {
    const servers: ServerProcess[] = [];
    await use(async (env = {}) => {
      const server = await ServerProcess.start(env);
      servers.push(server);
      return server;
    });
    await Promise.all(servers.map((s) => s.dispose()));
  },

  api: async ({ baseURL }, use) => {
    await use(api(baseURL!));
  },

  app: async ({ transport, baseURL }, use) => {
    await use(new App(transport, baseURL!));
  },
});

export { expect };
