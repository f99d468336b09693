import { expect, test } from "./fixtures.js";
import { uniqueName } from "./support/api.js";
import { chatUi } from "./support/chat-ui.js";

/** A `securitypolicyviolation` event as the page reports it to the test. */
interface Violation {
  readonly directive: string;
  readonly blockedURI: string;
  readonly sourceFile: string;
}

test.describe("content security policy", () => {
  test("the app logs in and chats under its CSP without a single violation", async ({
    page,
    app,
    api,
  }) => {
    const violations: Violation[] = [];
    const cspConsole: string[] = [];
    await page.exposeFunction("__reportCspViolation", (v: Violation) => {
      violations.push(v);
    });
    // Installed before any of the app's scripts run, in every document.
    await page.addInitScript(() => {
      document.addEventListener("securitypolicyviolation", (e) => {
        const report = (window as unknown as Record<string, (v: unknown) => void>)
          .__reportCspViolation;
        report?.({
          directive: e.effectiveDirective,
          blockedURI: e.blockedURI,
          sourceFile: e.sourceFile,
        });
      });
    });
    page.on("console", (msg) => {
      if (/Content Security Policy|Refused to/i.test(msg.text())) cspConsole.push(msg.text());
    });

    const response = await page.goto(app.url("/login"));
    const csp = response?.headers()["content-security-policy"] ?? "";
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("frame-ancestors 'none'");

    const room = uniqueName("csp");
    const me = await api.register();
    await app.login(page, me.username, me.password, undefined, `/chat/${room}`);
    const chat = chatUi(page, room);
    await expect(page.getByRole("heading", { name: `${room} chat room` })).toBeVisible();
    await expect(chat.status).toHaveAccessibleName("Chat: Live");
    await chat.send("under a strict CSP");
    await chat.expectOnce("under a strict CSP");

    expect(violations).toEqual([]);
    expect(cspConsole).toEqual([]);
  });
});
