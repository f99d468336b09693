import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { CredentialStore } from "./credentials.js";
import { findCliError } from "./errors.js";
import { authInterceptor, Session } from "./session.js";

const SERVER = "http://switchboard.test";

function unauthenticated(reason: string) {
  return new ConnectError("nope", Code.Unauthenticated, undefined, [
    { desc: ErrorInfoSchema, value: { reason, domain: "switchboard.dev" } },
  ]);
}

/** A JWT-shaped token (unsigned: the client never verifies) with the given exp. */
function jwt(name: string, expSecondsFromNow: number): string {
  const now = Math.floor(Date.now() / 1000);
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "HS256" })}.${part({ sub: name, name, roles: [], iat: now - 60, exp: now + expSecondsFromNow })}.sig`;
}

/**
 * An in-memory server: the access token "fresh…" is valid, anything else is
 * expired; Refresh hands out fresh tokens unless told the session is gone.
 */
async function setup(options: {
  accessToken: string;
  refreshFails?: string;
  failAfterFirst?: boolean;
}) {
  const dir = await mkdtemp(join(tmpdir(), "switchboard-session-"));
  const store = new CredentialStore(dir);
  await store.put(SERVER, {
    accessToken: options.accessToken,
    refreshToken: "refresh-1",
    userId: "u1",
    username: "ada",
  });
  const seen: string[] = [];
  let refreshes = 0;
  const check = (header: Headers) => {
    const token = header.get("authorization") ?? "";
    seen.push(token);
    if (!token.startsWith("Bearer fresh")) throw unauthenticated("TOKEN_EXPIRED");
  };
  const transport = createRouterTransport(({ service }) => {
    service(UserService, {
      getUser(req, ctx) {
        check(ctx.requestHeader);
        return { user: { id: req.id, username: "ada" } };
      },
      async *getUserStream(req, ctx) {
        if (options.failAfterFirst) {
          yield { id: req.ids[0] ?? "", result: { case: "user", value: { id: "x" } } };
        }
        check(ctx.requestHeader);
        for (const id of req.ids) yield { id, result: { case: "user", value: { id } } };
      },
    });
    service(AuthService, {
      refresh(req) {
        refreshes++;
        if (options.refreshFails) throw unauthenticated(options.refreshFails);
        return {
          accessToken: `fresh-${refreshes}`,
          refreshToken: `${req.refreshToken}+`,
          user: { id: "u1", username: "ada" },
        };
      },
    });
  });
  const session = new Session({
    store,
    server: SERVER,
    authClient: () => createClient(AuthService, transport),
  });
  const withAuth = createRouterTransport(
    ({ service }) => {
      // Same handlers, reached through the auth interceptor.
      service(UserService, {
        getUser: (req, ctx) =>
          createClient(UserService, transport).getUser(req, { headers: ctx.requestHeader }),
        getUserStream: (req, ctx) =>
          createClient(UserService, transport).getUserStream(req, { headers: ctx.requestHeader }),
      });
    },
    { transport: { interceptors: [authInterceptor(session)] } },
  );
  return {
    users: createClient(UserService, withAuth),
    seen,
    refreshes: () => refreshes,
    stored: async () => JSON.parse(await readFile(store.file, "utf8")).servers[SERVER],
  };
}

describe("authInterceptor", () => {
  it("unary: on TOKEN_EXPIRED refreshes once, stores the new pair and retries", async () => {
    const t = await setup({ accessToken: "stale" });
    const { user } = await t.users.getUser({ id: "u1" });
    expect(user?.id).toBe("u1");
    expect(t.seen).toEqual(["Bearer stale", "Bearer fresh-1"]);
    expect(t.refreshes()).toBe(1);
    expect(await t.stored()).toMatchObject({ accessToken: "fresh-1", refreshToken: "refresh-1+" });
    // The next call uses the stored fresh token at once.
    await t.users.getUser({ id: "u1" });
    expect(t.seen.at(-1)).toBe("Bearer fresh-1");
  });

  it("server stream: refreshes and retries once when it fails before its first message", async () => {
    const t = await setup({ accessToken: "stale" });
    const ids: string[] = [];
    for await (const item of t.users.getUserStream({ ids: ["a", "b"] })) ids.push(item.id);
    expect(ids).toEqual(["a", "b"]);
    expect(t.seen).toEqual(["Bearer stale", "Bearer fresh-1"]);
  });

  it("server stream: does not retry once messages have been delivered", async () => {
    const t = await setup({ accessToken: "stale", failAfterFirst: true });
    const ids: string[] = [];
    await expect(
      (async () => {
        for await (const item of t.users.getUserStream({ ids: ["a"] })) ids.push(item.id);
      })(),
    ).rejects.toThrow(/nope/);
    expect(ids).toEqual(["a"]);
    expect(t.refreshes()).toBe(0);
  });

  it("streams: refreshes before starting when the token is past (or near) its exp", async () => {
    const t = await setup({ accessToken: jwt("ada", -10) });
    for await (const _ of t.users.getUserStream({ ids: ["a"] }));
    expect(t.seen).toEqual(["Bearer fresh-1"]);
    const soon = await setup({ accessToken: jwt("ada", 3) }); // within the 30 s margin
    for await (const _ of soon.users.getUserStream({ ids: ["a"] }));
    expect(soon.refreshes()).toBe(1);
  });

  it("a refused refresh ends the stored session and asks to log in again", async () => {
    const t = await setup({ accessToken: "stale", refreshFails: "REFRESH_TOKEN_REUSED" });
    const error = await t.users.getUser({ id: "u1" }).catch((e: unknown) => e);
    const cli = findCliError(error);
    expect(cli?.exitCode).toBe(3);
    expect(cli?.message).toMatch(/has ended \(REFRESH_TOKEN_REUSED\): log in again/);
    expect(await t.stored()).toBeUndefined();
  });
});
