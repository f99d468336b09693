import { expect, test } from "./fixtures.js";
import { PASSWORD, uniqueName } from "./support/api.js";

test.describe("register and sign in", () => {
  test("register → sign in → see yourself in the live list", async ({ page, app }) => {
    const username = uniqueName("ada");
    await app.goto(page, "/register");
    await expect(page.getByRole("heading", { name: "Create an account" })).toBeVisible();

    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Email").fill(`${username}@example.com`);
    await page.getByLabel("Display name").fill("Ada Lovelace");
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Create account" }).click();

    // On to sign-in, with the username filled in.
    await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();
    await expect(page.getByText("Your account is ready")).toBeVisible();
    await expect(page.getByLabel("Username or email")).toHaveValue(username);
    await page.getByLabel("Password").fill(PASSWORD);
    await page.getByRole("button", { name: "Sign in" }).click();

    await expect(page.getByRole("heading", { name: "People" })).toBeVisible();
    await expect(page).toHaveURL(new RegExp(`transport=${app.transport}`));
    const list = page.getByRole("list", { name: "Everyone" });
    const me = list.getByRole("listitem").filter({ hasText: `@${username}` });
    await expect(me).toBeVisible();
    await expect(me).toContainText("Ada Lovelace");
    await expect(me).toContainText("you");
    await expect(page.getByRole("status", { name: /User list: Live/ })).toBeVisible();

    // A reload keeps the session (refresh token in sessionStorage).
    await page.reload();
    await expect(
      page.getByRole("list", { name: "Everyone" }).getByText(`@${username}`),
    ).toBeVisible();

    // Sign out: back to the login screen; a reload stays signed out.
    await page.getByRole("button", { name: "Sign out" }).click();
    await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();
    await page.reload();
    await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();
  });

  test("field errors and a taken username show on the right fields", async ({ page, app, api }) => {
    const taken = await api.register();
    await app.goto(page, "/register");
    const submit = page.getByRole("button", { name: "Create account" });

    // Invalid fields: one message under each bad field, from BadRequest.
    await page.getByLabel("Username").fill("x");
    await page.getByLabel("Email").fill("not-an-email");
    await page.getByLabel("Password").fill("short");
    await submit.click();
    const username = page.getByLabel("Username");
    await expect(username).toHaveAttribute("aria-invalid", "true");
    await expect(username).toHaveAccessibleDescription(/Username must be at least 3 characters/);
    await expect(page.getByLabel("Email")).toHaveAccessibleDescription(/valid email address/);
    await expect(page.getByLabel("Password")).toHaveAccessibleDescription(
      /Password must be at least 8 characters/,
    );
    await expect(page.getByLabel("Display name")).not.toHaveAttribute("aria-invalid", "true");
    // Focus moves to the first bad field.
    await expect(username).toBeFocused();

    // A taken username: AlreadyExists/USERNAME_TAKEN on the username field.
    const fresh = uniqueName("grace");
    await username.fill(taken.username.toUpperCase());
    await page.getByLabel("Email").fill(`${fresh}@example.com`);
    await page.getByLabel("Password").fill(PASSWORD);
    await submit.click();
    await expect(username).toHaveAccessibleDescription(/Username is already taken/);
    await expect(page.getByLabel("Email")).not.toHaveAttribute("aria-invalid", "true");
    await expect(page.getByLabel("Password")).not.toHaveAttribute("aria-invalid", "true");

    // A taken email: EMAIL_TAKEN on the email field.
    await username.fill(fresh);
    await page.getByLabel("Email").fill(`${taken.username}@example.com`);
    await submit.click();
    await expect(page.getByLabel("Email")).toHaveAccessibleDescription(
      /Email is already registered/,
    );
    await expect(username).not.toHaveAttribute("aria-invalid", "true");
  });

  test("submit is disabled while registering, and wrong passwords say so", async ({
    page,
    app,
  }) => {
    await app.goto(page, "/register");
    const username = uniqueName("hopper");
    await page.getByLabel("Username").fill(username);
    await page.getByLabel("Email").fill(`${username}@example.com`);
    await page.getByLabel("Password").fill(PASSWORD);
    // Hold the request so the pending state is observable.
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    await page.route("**/switchboard.user.v1.UserService/RegisterUser", async (route) => {
      await held;
      await route.continue();
    });
    await page.getByRole("button", { name: "Create account" }).click();
    await expect(page.getByRole("button", { name: "Creating account…" })).toBeDisabled();
    release();
    await expect(page.getByRole("heading", { name: "Sign in" })).toBeVisible();

    await page.getByLabel("Password").fill("wrong password");
    await page.getByRole("button", { name: "Sign in" }).click();
    await expect(page.getByRole("alert")).toHaveText(/Wrong username or password/);
  });
});
