import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { createTokenService } from "../../server/src/auth/tokens.js";
import { decodeAccessToken } from "../src/credentials.js";
import { type CliTestServer, runCli, startCliTestServer, tempConfigDir } from "./support.js";

/**
 * Tokens: an expired access token is refreshed without the user noticing
 * (unary, server-stream and client-stream calls, and several processes
 * sharing one credentials file); a revoked session asks to log in again.
 */

const KEY = Buffer.alloc(32, 7);
const PASSWORD = "correct horse battery";

interface Stored {
  servers: Record<string, { accessToken: string; refreshToken: string; userId: string }>;
}

describe("switchboard tokens", () => {
  let server: CliTestServer;
  const read = async (dir: string): Promise<Stored> =>
    JSON.parse(await readFile(join(dir, "credentials.json"), "utf8"));
  const entry = async (dir: string) => {
    const e = (await read(dir)).servers[server.url];
    if (!e) throw new Error("no stored session");
    return e;
  };

  /** Replaces the stored access token with a genuine one that expired an hour ago. */
  const expireAccessToken = async (dir: string) => {
    const data = await read(dir);
    const e = data.servers[server.url];
    const claims = e && decodeAccessToken(e.accessToken);
    if (!e || !claims) throw new Error("no stored session");
    const { token } = await createTokenService({
      key: KEY,
      accessTtlSeconds: 60,
      now: () => new Date(Date.now() - 3600_000),
    }).issueAccessToken({
      userId: claims.sub,
      username: claims.name,
      roles: claims.roles,
      sessionId: claims.sid ?? "",
    });
    e.accessToken = token;
    await writeFile(join(dir, "credentials.json"), JSON.stringify(data));
    return token;
  };

  const login = async (username: string, register = true) => {
    const dir = await tempConfigDir();
    const args = register
      ? ["register", username, "-e", `${username}@example.com`, "--password-stdin", "--login"]
      : ["login", username, "--password-stdin"];
    const r = await runCli(["--addr", server.url, ...args], {
      configDir: dir,
      input: `${PASSWORD}\n`,
    });
    expect(r.code, r.stderr).toBe(0);
    return dir;
  };
  const cli = (dir: string, args: string[], input?: string) =>
    runCli(["--addr", server.url, ...args], { configDir: dir, ...(input ? { input } : {}) });

  beforeAll(async () => {
    // No retry window: the reuse test presents the rotated token at once.
    server = await startCliTestServer({
      env: { AUTH_SIGNING_KEY: KEY.toString("base64url"), REFRESH_RETRY_GRACE_SECONDS: "0" },
    });
  });
  afterAll(() => server?.close());

  it("refreshes an expired token on a unary call, silently, and stores the new pair", async () => {
    const dir = await login("refresh_unary");
    const before = await entry(dir);
    const expired = await expireAccessToken(dir);
    const r = await cli(dir, ["whoami"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe("");
    expect(r.stdout).toContain("name:    refresh_unary");
    const after = await entry(dir);
    expect(after.accessToken).not.toBe(expired);
    expect(after.refreshToken).not.toBe(before.refreshToken);
    expect(decodeAccessToken(after.accessToken)?.exp).toBeGreaterThan(Date.now() / 1000);
  });

  it("refreshes before server streams (get, watch) and client streams (import)", async () => {
    const dir = await login("admin");
    const { userId } = await entry(dir);
    await expireAccessToken(dir);
    let r = await cli(dir, ["get", userId]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("\tadmin\t");
    await expireAccessToken(dir);
    r = await cli(dir, ["watch", "--count", "1"]);
    expect(r.code, r.stderr).toBe(0);
    await expireAccessToken(dir);
    r = await cli(
      dir,
      ["import", "-", "--format", "jsonl"],
      '{"username":"via_import","email":"vi@example.com","password":"long enough"}\n',
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("1 created, 0 failed");
  });

  it("lets concurrent processes share one session: one refresh, no reuse alarm", async () => {
    const dir = await login("refresh_many");
    await expireAccessToken(dir);
    const runs = await Promise.all([1, 2, 3, 4].map(() => cli(dir, ["whoami"])));
    for (const r of runs) expect(r.code, r.stderr).toBe(0);
    // The session is still alive: a later refresh works too.
    await expireAccessToken(dir);
    const r = await cli(dir, ["whoami"]);
    expect(r.code, r.stderr).toBe(0);
  });

  it("asks to log in again when the session was ended elsewhere (exit 3)", async () => {
    const dir = await login("revoked_elsewhere");
    const { accessToken, refreshToken } = await entry(dir);
    await createClient(
      AuthService,
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }),
    ).logout({ refreshToken }, { headers: { authorization: `Bearer ${accessToken}` } });
    await expireAccessToken(dir);
    const r = await cli(dir, ["whoami"]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/session .* has ended \(REFRESH_TOKEN_INVALID\): log in again/);
    expect((await read(dir)).servers[server.url]).toBeUndefined();
    const again = await cli(dir, ["--json", "get", "x"]);
    expect(again.code).toBe(3);
    expect(JSON.parse(again.stderr)).toMatchObject({
      error: {
        kind: "unauthenticated",
        exitCode: 3,
        message: expect.stringContaining("not logged in"),
      },
    });
  });

  it("asks to log in again when a stolen copy of the refresh token was used first (reuse)", async () => {
    const dir = await login("revoked_reuse");
    const copy = await tempConfigDir();
    await writeFile(join(copy, "credentials.json"), await readFile(join(dir, "credentials.json")));
    await expireAccessToken(copy);
    expect((await cli(copy, ["whoami"])).code).toBe(0); // the copy refreshes first
    await expireAccessToken(dir);
    const r = await cli(dir, ["whoami"]); // the original presents the rotated token
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/REFRESH_TOKEN_REUSED\): log in again/);
    await expireAccessToken(copy);
    expect((await cli(copy, ["whoami"])).code).toBe(3); // the whole family is revoked
  });

  it("never refreshes a --token; an expired one fails with exit 3", async () => {
    const dir = await login("explicit_token");
    const token = await expireAccessToken(dir);
    const other = await tempConfigDir();
    const r = await cli(other, ["--token", token, "whoami"]);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/access token has expired/);
    expect(r.stderr).toMatch(/reason: TOKEN_EXPIRED/);
  });

  it("logout ends the session on the server and forgets it", async () => {
    const dir = await login("logout_user");
    const { refreshToken } = await entry(dir);
    const r = await cli(dir, ["logout"]);
    expect(r.code, r.stderr).toBe(0);
    expect((await read(dir)).servers[server.url]).toBeUndefined();
    const refresh = createClient(
      AuthService,
      createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }),
    ).refresh({ refreshToken });
    await expect(refresh).rejects.toThrow(/refresh token/i);
  });
});
