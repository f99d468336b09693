import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, startTestServer, type TestServer } from "./support/server.js";

/** A stand-in for web/dist: what `vite build` writes, in miniature. */
async function fakeWebDist(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "sb-web-"));
  await mkdir(join(root, "assets"));
  await writeFile(
    join(root, "index.html"),
    '<!doctype html><html><head><script type="module" src="/assets/index-AbC123.js"></script></head><body><div id="root"></div></body></html>',
  );
  await writeFile(join(root, "assets", "index-AbC123.js"), "console.log('app');\n");
  return root;
}

const get = (url: string, accept = "text/html") => fetch(url, { headers: { accept } });

describe("web app responses", () => {
  let server: TestServer;
  let webRoot: string;

  beforeAll(async () => {
    webRoot = await fakeWebDist();
    server = await startTestServer({ webRoot });
  });
  afterAll(async () => {
    await server.close();
    await rm(webRoot, { recursive: true, force: true });
  });

  for (const path of ["/", "/index.html", "/chat/lobby"]) {
    it(`serves ${path} as index.html with a strict CSP and no-cache`, async () => {
      const res = await get(`${server.url}${path}`);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('<div id="root">');
      expect(res.headers.get("cache-control")).toBe("no-cache");
      const csp = res.headers.get("content-security-policy") ?? "";
      const directives = new Map(
        csp.split(";").map((d) => {
          const [name = "", ...values] = d.trim().split(/\s+/);
          return [name, values.join(" ")] as const;
        }),
      );
      expect(directives.get("default-src")).toBe("'self'");
      expect(directives.get("script-src")).toBe("'self'");
      expect(directives.get("frame-ancestors")).toBe("'none'");
      expect(directives.get("object-src")).toBe("'none'");
      expect(directives.get("base-uri")).toBe("'none'");
      expect(csp).not.toContain("unsafe-inline");
      expect(csp).not.toContain("unsafe-eval");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      expect(res.headers.get("referrer-policy")).toBe("no-referrer");
      expect(res.headers.get("x-frame-options")).toBe("DENY");
    });
  }

  it("serves hashed assets as public, max-age=31536000, immutable with the same headers", async () => {
    const res = await get(`${server.url}/assets/index-AbC123.js`, "*/*");
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
    expect(res.headers.get("x-content-type-options")).toBe("nosniff");
    expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
  });

  it("leaves RPC responses without the web app's headers", async () => {
    const res = await fetch(`${server.url}/switchboard.user.v1.UserService/GetUser`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "x" }),
    });
    expect(res.status).toBe(401);
    expect(res.headers.get("content-security-policy")).toBeNull();
    expect(res.headers.get("x-frame-options")).toBeNull();
  });
});

describe("web/index.html", () => {
  it("has no inline script for the CSP to refuse", async () => {
    const html = await readFile(join(ROOT, "web", "index.html"), "utf8");
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attributes, body] of scripts) {
      expect(attributes).toMatch(/\bsrc=/);
      expect(body?.trim()).toBe("");
    }
    expect(html).not.toMatch(/<style\b|\son[a-z]+=/i);
  });
});
