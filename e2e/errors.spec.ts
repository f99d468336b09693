import { expect, test } from "./fixtures.js";
import { api as apiOf, PASSWORD } from "./support/api.js";
import { chatUi } from "./support/chat-ui.js";

/** A Connect end-of-stream frame (flag 0x02) carrying `json`. */
function connectEndStream(json: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(json));
  const head = Buffer.alloc(5);
  head.writeUInt8(2, 0);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

test.describe("errors in words", () => {
  test("an internal error quotes the request id for support", async ({
    page,
    app,
    api,
    transport,
  }) => {
    const me = await api.register();
    await app.login(page, me.username, me.password);
    // The server never fails on purpose: the browser is told it did.
    await page.route("**/switchboard.user.v1.UserService/GetUserStream", (route) =>
      transport === "grpc-web"
        ? route.fulfill({
            status: 200,
            headers: {
              "content-type": "application/grpc-web+proto",
              "grpc-status": "13",
              "grpc-message": "internal error",
              "x-request-id": "req-e2e-42",
            },
            body: "",
          })
        : route.fulfill({
            status: 200,
            headers: { "content-type": "application/connect+json" },
            body: connectEndStream({
              error: { code: "internal", message: "internal error" },
              metadata: { "x-request-id": ["req-e2e-42"] },
            }),
          }),
    );
    await page.getByLabel("User ids").fill(me.user.id);
    await page.getByRole("button", { name: "Look up", exact: true }).click();
    const alert = page.getByRole("alert").filter({ hasText: "Something went wrong on our side" });
    await expect(alert).toBeVisible();
    await expect(alert).toContainText("quote request id req-e2e-42");
  });

  test.describe("network trouble", () => {
    test.use({ allowNetworkErrors: true });

    test("a dropped live list says reconnecting and recovers by itself", async ({
      page,
      app,
      api,
    }) => {
      const me = await api.register();
      await app.login(page, me.username, me.password);
      const status = page.getByRole("status", { name: /^User list: / });
      await expect(status).toHaveAccessibleName("User list: Live");

      // The network refuses WatchUsers; leaving the page and coming back
      // opens a new stream (resuming from the cached cursor), which fails.
      await page.route("**/switchboard.user.v1.UserService/WatchUsers", (route) =>
        route.abort("connectionrefused"),
      );
      await page.getByRole("link", { name: "Chat" }).click();
      await expect(page.getByRole("status", { name: /^Chat: / })).toHaveAccessibleName(
        "Chat: Live",
      );
      await page.getByRole("link", { name: "People" }).click();
      await expect(status).toHaveAccessibleName(/User list: Reconnecting/);
      // What was there stays there while reconnecting.
      const list = page.getByRole("list", { name: "Everyone" });
      await expect(list.getByText(`@${me.username}`)).toHaveCount(1);
      const late = await api.register();
      await page.unroute("**/switchboard.user.v1.UserService/WatchUsers");
      // Backoff brings it back without a click.
      await expect(status).toHaveAccessibleName("User list: Live");
      await expect(list.getByText(`@${late.username}`)).toHaveCount(1);
      await expect(list.getByText(`@${me.username}`)).toHaveCount(1);
    });
  });

  test("sign-in rate limit: a live countdown, then sign-in works", async ({
    page,
    app,
    startServer,
  }) => {
    const server = await startServer({ RATE_LIMIT_LOGIN: "3/6" });
    const me = await apiOf(server.url).register();
    await app.goto(page, "/login", server.url);
    const submit = page.getByRole("button", { name: "Sign in" });
    await page.getByLabel("Username or email").fill(me.username);
    await page.getByLabel("Password").fill("wrong password");
    for (let i = 0; i < 3; i++) {
      await submit.click();
      await expect(page.getByRole("alert")).toHaveText(/Wrong username or password/);
    }
    await submit.click();
    const alert = page.getByRole("alert");
    await expect(alert).toContainText("Too many requests");
    const seconds = async () =>
      Number(/Try again in (\d+) s/.exec((await alert.textContent()) ?? "")?.[1]);
    const first = await seconds();
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThanOrEqual(6);
    await expect(submit).toBeDisabled();
    // It counts down, live.
    await expect.poll(seconds).toBeLessThan(first);
    await expect(alert).toContainText("You can try again now.");
    await expect(submit).toBeEnabled();
    await page.getByLabel("Password").fill(PASSWORD);
    await submit.click();
    await expect(page.getByRole("heading", { name: "People" })).toBeVisible();
  });

  test("chat rate limit: the message waits, with a countdown, and can be retried", async ({
    page,
    app,
    startServer,
  }) => {
    const server = await startServer({ RATE_LIMIT_CHAT: "2/5" });
    const me = await apiOf(server.url).register();
    const room = "limits";
    await app.login(page, me.username, me.password, server.url, `/chat/${room}`);
    const ui = chatUi(page, room);
    await expect(ui.status).toHaveAccessibleName("Chat: Live");
    await ui.send("one");
    await ui.expectOnce("one");
    await ui.send("two");
    await ui.expectOnce("two");
    await ui.send("three");
    const row = ui.message("three");
    await expect(row).toHaveAttribute("data-state", "failed");
    await expect(row).toContainText("Not sent — Too many requests");
    const alert = page.getByRole("alert").filter({ hasText: "Try again in" });
    await expect(alert).toBeVisible();
    await expect(page.getByRole("button", { name: "Send" })).toBeDisabled();
    await expect(page.getByRole("alert").filter({ hasText: "You can try again now." })).toBeVisible(
      { timeout: 8000 },
    );
    await row.getByRole("button", { name: "Retry" }).click();
    await ui.expectOnce("three");
  });
});
