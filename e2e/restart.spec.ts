import { expect, test } from "./fixtures.js";
import { api as apiOf } from "./support/api.js";
import { chatUi } from "./support/chat-ui.js";

// The browser logs refused connections while the server is down.
test.use({ allowNetworkErrors: true });

test("the server restarts mid-session: list and chat reconnect, no message lost or doubled", async ({
  page,
  app,
  newContext,
  startServer,
}) => {
  const server = await startServer({ SHUTDOWN_GRACE_MS: "1000" });
  const client = apiOf(server.url);
  const me = await client.register();
  const peer = await client.registerAndLogin();
  const peerChat = () => client.as(peer).chat;
  const room = "restart";

  // One tab on People, another (its own session) in the chat room.
  await app.login(page, me.username, me.password, server.url);
  const listStatus = page.getByRole("status", { name: /^User list: / });
  await expect(listStatus).toHaveAccessibleName("User list: Live");
  const chatPage = await (await newContext()).newPage();
  await app.login(chatPage, me.username, me.password, server.url, `/chat/${room}`);
  const ui = chatUi(chatPage, room);
  await expect(ui.status).toHaveAccessibleName("Chat: Live");

  await peerChat().send({ room, clientMsgId: "before-1", text: "before restart 1" });
  await ui.send("before restart 2");
  await ui.expectOnce("before restart 1");
  await ui.expectOnce("before restart 2");

  // Down: both views say so, and a message typed now waits.
  await server.stop();
  await expect(listStatus).toHaveAccessibleName(/User list: Reconnecting/);
  await expect(ui.status).toHaveAccessibleName(/Chat: Reconnecting/);
  await ui.send("typed while down");
  await expect(ui.message("typed while down")).toHaveAttribute("data-state", "sending");

  // Up again, same port and data: others act before the browser is back.
  await server.start();
  await peerChat().send({ room, clientMsgId: "after-1", text: "after restart 1" });
  const newcomer = await client.register({ displayName: "After Restart" });

  await expect(ui.status).toHaveAccessibleName("Chat: Live", { timeout: 20_000 });
  await expect(listStatus).toHaveAccessibleName("User list: Live", { timeout: 20_000 });
  await ui.expectOnce("typed while down");
  await ui.expectOnce("after restart 1");
  await peerChat().send({ room, clientMsgId: "after-2", text: "after restart 2" });
  await ui.expectOnce("after restart 2");
  for (const text of ["before restart 1", "before restart 2"]) await ui.expectOnce(text);
  await expect(ui.log.getByRole("listitem")).toHaveCount(5);
  // In the server's order (ids strictly increasing), whoever stored first.
  const ids = (
    await ui.log.getByRole("listitem").evaluateAll((rows) => rows.map((r) => r.dataset.id ?? ""))
  ).map(Number);
  expect(ids).toEqual([...ids].sort((a, b) => a - b));
  expect(new Set(ids).size).toBe(5);

  const list = page.getByRole("list", { name: "Everyone" });
  await expect(list.getByText(`@${newcomer.username}`)).toHaveCount(1);
  for (const u of [me, peer]) await expect(list.getByText(`@${u.username}`)).toHaveCount(1);
  await expect(list.getByRole("listitem")).toHaveCount(3);
  // Nobody was logged out by the restart.
  await expect(page.getByRole("button", { name: "Sign out" })).toBeVisible();
  await expect(chatPage.getByRole("button", { name: "Sign out" })).toBeVisible();
});
