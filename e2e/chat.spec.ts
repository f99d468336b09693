import { expect, test } from "./fixtures.js";
import { uniqueName } from "./support/api.js";
import { chatUi } from "./support/chat-ui.js";
import { GrpcChatPeer } from "./support/grpc-chat-peer.js";

test.describe("chat", () => {
  test("two browsers chat in one room, with presence", async ({ page, app, api, newContext }) => {
    const room = uniqueName("room");
    const ada = await api.register();
    const bob = await api.register();
    const bobPage = await (await newContext()).newPage();
    await app.login(page, ada.username, ada.password, undefined, `/chat/${room}`);
    await app.login(bobPage, bob.username, bob.password, undefined, `/chat/${room}`);

    const a = chatUi(page, room);
    const b = chatUi(bobPage, room);
    await expect(page.getByRole("heading", { name: `${room} chat room` })).toBeVisible();
    await expect(a.status).toHaveAccessibleName("Chat: Live");
    await expect(page.getByText(`No messages in #${room} yet.`)).toBeVisible();
    // Presence: each sees both.
    await expect(a.members.getByRole("listitem")).toHaveCount(2);
    await expect(b.members.getByText(ada.username)).toBeVisible();

    await a.send("Hello from Ada");
    await a.expectOnce("Hello from Ada");
    await expect(a.composer).toBeFocused();
    await b.expectOnce("Hello from Ada");
    // Screen readers hear messages from others.
    await expect(
      bobPage.locator("[aria-live=polite]").filter({ hasText: "Hello from Ada" }),
    ).toHaveCount(1);

    await b.send("Hi Ada, Bob here");
    await a.expectOnce("Hi Ada, Bob here");
    await expect(a.message("Hi Ada, Bob here")).toContainText(bob.username);

    // Bob leaves: Ada sees it.
    await bobPage.close();
    await expect(a.members.getByRole("listitem")).toHaveCount(1);
    await expect(a.log.getByText(`${bob.username} left`)).toBeVisible();
  });

  test("a browser and a native gRPC client (grpc-js, bidi Chat) talk in one room", async ({
    page,
    app,
    api,
    baseURL,
  }) => {
    const room = uniqueName("mixed");
    const ada = await api.register();
    const grace = await api.registerAndLogin();
    await app.login(page, ada.username, ada.password, undefined, `/chat/${room}`);
    const ui = chatUi(page, room);
    await expect(ui.status).toHaveAccessibleName("Chat: Live");

    const peer = GrpcChatPeer.open(baseURL!, grace.accessToken);
    try {
      await peer.join(room);
      await expect(ui.members.getByText(grace.username)).toBeVisible();

      const stored = await peer.send(room, "Hello from grpc-js");
      expect(stored.senderUsername).toBe(grace.username);
      await ui.expectOnce("Hello from grpc-js");
      await expect(ui.message("Hello from grpc-js")).toContainText(grace.username);

      await ui.send("Hello back from the browser");
      const got = await peer.waitForMessage("Hello back from the browser");
      expect(got.senderUsername).toBe(ada.username);
      await ui.expectOnce("Hello back from the browser");
      // Each side saw each message once.
      expect(peer.messages.filter((m) => m.text === "Hello back from the browser")).toHaveLength(1);
    } finally {
      peer.close();
    }
    await expect(ui.members.getByText(grace.username)).toHaveCount(0);
  });

  test("own messages show at once and are confirmed by the server", async ({ page, app, api }) => {
    const room = uniqueName("pending");
    const ada = await api.register();
    await app.login(page, ada.username, ada.password, undefined, `/chat/${room}`);
    const ui = chatUi(page, room);
    await expect(ui.status).toHaveAccessibleName("Chat: Live");

    // Hold Send: the message is there, pending, before the server answers.
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    await page.route("**/switchboard.chat.v1.ChatService/Send", async (route) => {
      await held;
      await route.continue();
    });
    await ui.send("Pending for a moment");
    await expect(ui.message("Pending for a moment")).toHaveAttribute("data-state", "sending");
    await expect(ui.message("Pending for a moment")).toContainText("Sending…");
    release();
    await ui.expectOnce("Pending for a moment");
    await expect(ui.message("Pending for a moment")).not.toContainText("Sending…");
  });

  test("history on join, older history on scroll, no duplicates", async ({ page, app, api }) => {
    const room = uniqueName("history");
    const writer = await api.registerAndLogin();
    const chat = api.as(writer).chat;
    for (let i = 1; i <= 70; i++) {
      await chat.send({ room, clientMsgId: `seed-${i}`, text: `seed message ${i}` });
    }
    const ada = await api.register();
    await app.login(page, ada.username, ada.password, undefined, `/chat/${room}`);
    const ui = chatUi(page, room);
    await expect(ui.status).toHaveAccessibleName("Chat: Live");

    // The newest page (50) first, scrolled to the newest message.
    await expect(ui.message("seed message 70")).toBeInViewport();
    await expect(ui.log.getByRole("listitem")).toHaveCount(50);
    await expect(ui.message("seed message 20")).toHaveCount(0);

    // Scrolling to the top loads the rest (History before_id).
    await ui.log.getByRole("listitem").first().scrollIntoViewIfNeeded();
    await expect(page.getByText(`This is the beginning of #${room}.`)).toBeVisible();
    await expect(ui.log.getByRole("listitem")).toHaveCount(70);
    for (const n of [1, 20, 21, 50, 51, 70]) await ui.expectOnce(`seed message ${n}`);

    // Live messages still arrive after the backfill.
    await chat.send({ room, clientMsgId: "live-1", text: "a live one" });
    await ui.expectOnce("a live one");
    await expect(ui.log.getByRole("listitem")).toHaveCount(71);
  });
});
