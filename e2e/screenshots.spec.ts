import { randomBytes } from "node:crypto";
import { join } from "node:path";
import type { Page, TestInfo } from "@playwright/test";
import { expect, test } from "./fixtures.js";
import { chatUi } from "./support/chat-ui.js";
import { GrpcChatPeer } from "./support/grpc-chat-peer.js";

/**
 * A screenshot of each main screen, on a desktop and a phone (375 px),
 * written to test-results/screenshots/<project>-<screen>-<size>.png and
 * attached to the HTML report. The assertions make sure each screen is in
 * its settled state first.
 */

const SIZES = {
  desktop: { width: 1280, height: 800 },
  phone: { width: 375, height: 740 },
} as const;

async function shoot(page: Page, testInfo: TestInfo, name: string): Promise<void> {
  for (const [size, viewport] of Object.entries(SIZES)) {
    await page.setViewportSize(viewport);
    // No horizontal scrolling at any width.
    expect(
      await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
      `${name} fits ${viewport.width}px`,
    ).toBe(true);
    const path = join(
      testInfo.project.outputDir,
      "screenshots",
      `${testInfo.project.name}-${name}-${size}.png`,
    );
    await page.screenshot({ path, animations: "disabled" });
    await testInfo.attach(`${name}-${size}`, { path, contentType: "image/png" });
  }
  await page.setViewportSize(SIZES.desktop);
}

/** A readable name that is still unique per run (`ada-3f9c`). */
const named = (name: string) => `${name}-${randomBytes(2).toString("hex")}`;

test("screens", async ({ page, app, api, baseURL }, testInfo) => {
  const room = named("lounge");
  const ada = await api.registerAndLogin({ username: named("ada"), displayName: "Ada Lovelace" });
  const grace = await api.registerAndLogin({
    username: named("grace"),
    displayName: "Grace Hopper",
  });
  const me = await api.register({ username: named("alan"), displayName: "Alan Turing" });

  // Sign in (with a wrong password first: the error state).
  await app.goto(page, "/login");
  await page.getByLabel("Username or email").fill(me.username);
  await page.getByLabel("Password").fill("not my password");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByRole("alert")).toHaveText(/Wrong username or password/);
  await shoot(page, testInfo, "login");

  // Register, with field errors and a taken username.
  await page.getByRole("link", { name: "Create an account" }).click();
  await page.getByLabel("Username").fill(ada.username);
  await page.getByLabel("Email").fill("ada@");
  await page.getByLabel("Password").fill("short");
  await page.getByRole("button", { name: "Create account" }).click();
  await expect(page.getByLabel("Email")).toHaveAttribute("aria-invalid", "true");
  await shoot(page, testInfo, "register-errors");

  // People, with a lookup.
  await app.login(page, me.username, me.password);
  await page.getByRole("button", { name: `Add ${ada.username} to lookup` }).click();
  await page.getByRole("button", { name: `Add ${grace.username} to lookup` }).click();
  await page.getByLabel("User ids").press("End");
  await page.getByLabel("User ids").pressSequentially("\nno-such-id");
  await page.getByRole("button", { name: "Look up", exact: true }).click();
  await expect(page.getByText("2 of 3 found.")).toBeVisible();
  await shoot(page, testInfo, "people");

  // A chat room with a conversation.
  const chat = (who: typeof ada) => api.as(who).chat;
  const lines: Array<[typeof ada, string]> = [
    [ada, "Morning all! Has anyone tried the new gRPC-Web transport?"],
    [grace, "Yes — switched the protocol setting and everything kept working."],
    [grace, "Streams reconnect by themselves too, which is nice."],
    [ada, "Same here. The list picked up a new sign-up without a reload."],
  ];
  let n = 0;
  for (const [who, text] of lines) await chat(who).send({ room, clientMsgId: `s${n++}`, text });
  // Grace is in the room from a native gRPC client.
  const graceLive = GrpcChatPeer.open(baseURL!, grace.accessToken);
  await graceLive.join(room);
  await page.getByRole("link", { name: "Chat" }).click();
  await page.getByRole("textbox", { name: "Room name" }).fill(room);
  await page.getByRole("button", { name: "Join" }).click();
  const ui = chatUi(page, room);
  await expect(ui.status).toHaveAccessibleName("Chat: Live");
  await ui.send("Hello! Just joined — this looks great.");
  await ui.expectOnce("Hello! Just joined — this looks great.");
  await graceLive.send(room, `Welcome, ${me.username}!`);
  await ui.expectOnce(`Welcome, ${me.username}!`);
  await expect(ui.members.getByRole("listitem")).toHaveCount(2);
  await shoot(page, testInfo, "chat");
  graceLive.close();
});
