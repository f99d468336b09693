import { expect, test } from "./fixtures.js";
import { PASSWORD, uniqueName } from "./support/api.js";

test.describe("people", () => {
  test("someone registering in another browser appears live, without a reload", async ({
    page,
    app,
    api,
    newContext,
  }) => {
    const me = await api.register();
    await app.login(page, me.username, me.password);
    const list = page.getByRole("list", { name: "Everyone" });
    await expect(list.getByText(`@${me.username}`)).toBeVisible();
    await expect(page.getByRole("status", { name: /User list: Live/ })).toBeVisible();
    const loads: string[] = [];
    page.on("load", () => loads.push(page.url()));

    // A second browser registers through the app.
    const other = await (await newContext()).newPage();
    const newcomer = uniqueName("newcomer");
    await app.goto(other, "/register");
    await other.getByLabel("Username").fill(newcomer);
    await other.getByLabel("Email").fill(`${newcomer}@example.com`);
    await other.getByLabel("Display name").fill("New Comer");
    await other.getByLabel("Password").fill(PASSWORD);
    await other.getByRole("button", { name: "Create account" }).click();
    await expect(other.getByText("Your account is ready")).toBeVisible();

    const row = list.getByRole("listitem").filter({ hasText: `@${newcomer}` });
    await expect(row).toBeVisible();
    await expect(row).toContainText("New Comer");
    // Newest first (other tests register too: compare positions, not "first").
    const names = await list
      .getByRole("listitem")
      .evaluateAll((rows) => rows.map((r) => r.textContent ?? ""));
    const at = (username: string) => names.findIndex((t) => t.includes(`@${username} `));
    expect(at(newcomer)).toBeGreaterThanOrEqual(0);
    expect(at(newcomer)).toBeLessThan(at(me.username));
    expect(loads).toHaveLength(0);
  });

  test("look up several users by id: rows stream in, unknown ids say not found", async ({
    page,
    app,
    api,
  }) => {
    const me = await api.registerAndLogin();
    const a = await api.register({ displayName: "Alpha Person" });
    const b = await api.register({ displayName: "Beta Person" });
    await app.login(page, me.username, me.password);

    const ids = [a.user.id, "no-such-user", b.user.id];
    await page.getByLabel("User ids").fill(ids.join("\n"));
    await page.getByRole("button", { name: "Look up", exact: true }).click();

    const results = page.getByRole("list", { name: "Lookup results" }).getByRole("listitem");
    await expect(results).toHaveCount(3);
    await expect(results.nth(0)).toContainText("Alpha Person");
    await expect(results.nth(0)).toContainText(`@${a.username}`);
    await expect(results.nth(1)).toContainText("Not found");
    await expect(results.nth(1)).toContainText("no-such-user");
    await expect(results.nth(2)).toContainText("Beta Person");
    await expect(page.getByText("2 of 3 found.")).toBeVisible();

    // "Look up" next to a person adds their id.
    await page.getByLabel("User ids").fill("");
    await page.getByRole("button", { name: `Add ${me.username} to lookup` }).click();
    await expect(page.getByLabel("User ids")).toHaveValue(me.user.id);
    await page.getByRole("button", { name: "Look up", exact: true }).click();
    await expect(results).toHaveCount(1);
    await expect(results.first()).toContainText(`@${me.username}`);
  });

  test("an invalid id list is explained under the box", async ({ page, app, api }) => {
    const me = await api.register();
    await app.login(page, me.username, me.password);
    await page.getByLabel("User ids").fill("x".repeat(80));
    await page.getByRole("button", { name: "Look up", exact: true }).click();
    await expect(page.getByText(/must be at most 64 characters/)).toBeVisible();
    await expect(page.getByLabel("User ids")).toHaveAttribute("aria-invalid", "true");
  });

  test.describe("protocol setting", () => {
    test.use({ checkProtocol: false });

    test("switching the protocol moves every call to it, live", async ({ page, app, api }) => {
      const me = await api.register();
      await app.login(page, me.username, me.password);
      const other = app.transport === "connect" ? "grpc-web" : "connect";
      const label = other === "connect" ? "Connect" : "gRPC-Web";
      const contentTypes: string[] = [];
      page.on("request", (req) => {
        if (req.url().includes("/switchboard."))
          contentTypes.push(req.headers()["content-type"] ?? "");
      });

      await page.getByLabel("Protocol").selectOption({ label });
      await expect(page).toHaveURL(new RegExp(`transport=${other}`));
      const status = page.getByRole("status", { name: /^User list: / });
      await expect(status).toHaveAccessibleName("User list: Live");
      const late = await api.register();
      const list = page.getByRole("list", { name: "Everyone" });
      await expect(list.getByText(`@${late.username}`)).toHaveCount(1);
      await expect(list.getByText(`@${me.username}`)).toHaveCount(1);
      expect(contentTypes.length).toBeGreaterThan(0);
      for (const type of contentTypes) {
        expect(type).toMatch(other === "grpc-web" ? /^application\/grpc-web/ : /json/);
      }
      // The choice survives navigation.
      await page.getByRole("link", { name: "Chat" }).click();
      await expect(page).toHaveURL(new RegExp(`/chat/general\\?transport=${other}`));
      await expect(page.getByLabel("Protocol")).toHaveValue(other);
    });
  });
});
