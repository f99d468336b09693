import { expect, type Page } from "@playwright/test";

/** The chat room's parts, by role and label. */
export function chatUi(page: Page, room: string) {
  const log = page.getByRole("log", { name: `Messages in #${room}` });
  const composer = page.getByRole("textbox", { name: `Message #${room}` });
  const members = page.getByRole("list", { name: "Members" });
  /** The row of the message whose text is exactly `text`. */
  const message = (text: string) =>
    log.getByRole("listitem").filter({ has: page.getByText(text, { exact: true }) });
  return {
    log,
    composer,
    members,
    message,
    status: page.getByRole("status", { name: /^Chat: / }),
    /** Types `text` and presses Enter. */
    async send(text: string) {
      await composer.fill(text);
      await composer.press("Enter");
    },
    /** Exactly one row with `text`, stored (not pending). */
    async expectOnce(text: string) {
      await expect(message(text)).toHaveCount(1);
      await expect(message(text)).toHaveAttribute("data-state", "sent");
    },
  };
}
