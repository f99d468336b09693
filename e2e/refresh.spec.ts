import type { Page, Route } from "@playwright/test";
import { expect, test } from "./fixtures.js";
import { api as apiOf } from "./support/api.js";
import { chatUi } from "./support/chat-ui.js";

/**
 * Access tokens that live 1 s (plus the server's 5 s clock tolerance): the
 * app must refresh them on TOKEN_EXPIRED and retry, without the user
 * noticing, sharing one Refresh between calls that fail together.
 */
const SHORT_TOKENS = { ACCESS_TOKEN_TTL_SECONDS: "1" };

function countRefreshes(page: Page): { count: number } {
  const counter = { count: 0 };
  page.on("request", (req) => {
    if (req.url().endsWith("/switchboard.auth.v1.AuthService/Refresh")) counter.count++;
  });
  return counter;
}

/**
 * Responses of `method` that said UNAUTHENTICATED: HTTP 401 (Connect), or
 * grpc-status 16 in the headers or the trailer frame (gRPC-Web).
 */
function countUnauthenticated(page: Page, method: string): { count: number } {
  const counter = { count: 0 };
  page.on("response", async (res) => {
    if (!res.url().endsWith(method)) return;
    const grpcStatus =
      (await res.headerValue("grpc-status")) ??
      /grpc-status:\s*(\d+)/i.exec((await res.body()).toString("latin1"))?.[1];
    if (res.status() === 401 || grpcStatus === "16") counter.count++;
  });
  return counter;
}

test.describe("token refresh", () => {
  test("unary calls: two sends that fail together share one refresh and both go through", async ({
    page,
    app,
    startServer,
  }) => {
    const server = await startServer(SHORT_TOKENS);
    const me = await apiOf(server.url).register();
    const room = "refresh";
    await app.login(page, me.username, me.password, server.url, `/chat/${room}`);
    const ui = chatUi(page, room);
    await expect(ui.status).toHaveAccessibleName("Chat: Live");
    const refreshes = countRefreshes(page);
    const expired = countUnauthenticated(page, "/switchboard.chat.v1.ChatService/Send");

    // Both sends of a round reach the server together (held until both arrived).
    let held: Route[] = [];
    await page.route("**/switchboard.chat.v1.ChatService/Send", async (route) => {
      held.push(route);
      if (held.length >= 2) {
        const go = held;
        held = [];
        await Promise.all(go.map((r) => r.continue()));
      }
    });

    let round = 0;
    await expect
      .poll(
        async () => {
          round++;
          await ui.send(`round ${round} a`);
          await ui.send(`round ${round} b`);
          await ui.expectOnce(`round ${round} a`);
          await ui.expectOnce(`round ${round} b`);
          return refreshes.count;
        },
        { timeout: 25_000, intervals: [1000] },
      )
      .toBeGreaterThan(0);
    // Both failed with TOKEN_EXPIRED, one Refresh served both, both were retried.
    expect(expired.count).toBe(2);
    expect(refreshes.count).toBe(1);
    await expect(page.getByText("Not sent")).toHaveCount(0);
    await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
  });

  test("server streams: a lookup after expiry refreshes and retries", async ({
    page,
    app,
    startServer,
  }) => {
    const server = await startServer(SHORT_TOKENS);
    const me = await apiOf(server.url).register({ displayName: "Stream Tester" });
    await app.login(page, me.username, me.password, server.url);
    const refreshes = countRefreshes(page);
    await page.getByLabel("User ids").fill(me.user.id);
    const results = page.getByRole("list", { name: "Lookup results" }).getByRole("listitem");
    await expect
      .poll(
        async () => {
          await page.getByRole("button", { name: "Look up", exact: true }).click();
          await expect(page.getByText("1 of 1 found.")).toBeVisible();
          await expect(results).toHaveCount(1);
          await expect(results.first()).toContainText("Stream Tester");
          return refreshes.count;
        },
        { timeout: 25_000, intervals: [1000] },
      )
      .toBeGreaterThan(0);
    expect(refreshes.count).toBe(1);
    await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
  });

  test("a refused refresh returns to the login screen", async ({ page, app, startServer }) => {
    const server = await startServer(SHORT_TOKENS);
    const client = apiOf(server.url);
    const me = await client.register();
    await app.login(page, me.username, me.password, server.url);

    // The browser's session is ended elsewhere (its refresh token revoked).
    const browserToken = await page.evaluate(() => sessionStorage.getItem("switchboard.refresh"));
    expect(browserToken).toBeTruthy();
    const other = await client.login(me.username);
    await client.as(other).auth.logout({ refreshToken: browserToken! });

    await page.getByLabel("User ids").fill(me.user.id);
    const signIn = page.getByRole("heading", { name: "Sign in" });
    await expect
      .poll(
        async () => {
          if (!(await signIn.isVisible())) {
            await page.getByRole("button", { name: "Look up", exact: true }).click();
          }
          return signIn.isVisible();
        },
        { timeout: 25_000, intervals: [1000] },
      )
      .toBe(true);
    await expect(page.getByRole("status")).toContainText("Your session has ended");
    expect(await page.evaluate(() => sessionStorage.getItem("switchboard.refresh"))).toBeNull();
  });
});
