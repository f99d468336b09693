import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { v7 as uuidv7 } from "uuid";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AuthService } from "../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { createTokenService } from "../server/src/auth/tokens.js";
import { openStore } from "../server/src/storage/index.js";
import type { Store } from "../server/src/storage/store.js";
import { bearer, registerAndLogin } from "./support/auth.js";
import { requireRedis, TEST_REDIS_URL } from "./support/redis.js";
import { startTestServer, type TestServer, tempDataDir } from "./support/server.js";

const KEY = Buffer.alloc(32, 42);
const KEY_ENV = { AUTH_SIGNING_KEY: KEY.toString("base64url") };

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

const outcome = (err: ConnectError) => [err.code, err.findDetails(ErrorInfoSchema)[0]?.reason];

/** GetUser of oneself with `accessToken` against `url`. */
const getSelf = (url: string, accessToken: string, userId: string) =>
  createClient(
    UserService,
    createGrpcTransport({ baseUrl: url, interceptors: [bearer(accessToken)] }),
  ).getUser({ id: userId });

const auth = (url: string, accessToken?: string) =>
  createClient(
    AuthService,
    createConnectTransport({
      baseUrl: url,
      httpVersion: "1.1",
      interceptors: accessToken ? [bearer(accessToken)] : [],
    }),
  );

describe("access tokens of ended sessions", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: KEY_ENV });
  });
  afterAll(() => server.close());

  it("stop working as soon as their session logs out", async () => {
    const me = await registerAndLogin(server.url);
    await getSelf(server.url, me.accessToken, me.userId);
    await auth(server.url, me.accessToken).logout({ refreshToken: me.refreshToken });
    const err = await rejection(getSelf(server.url, me.accessToken, me.userId));
    expect(outcome(err)).toEqual([Code.Unauthenticated, "TOKEN_REVOKED"]);
  });

  it("stop working, every one of the login, when refresh-token theft is detected", async () => {
    const me = await registerAndLogin(server.url);
    const rotated = await auth(server.url).refresh({ refreshToken: me.refreshToken });
    await getSelf(server.url, me.accessToken, me.userId);
    await getSelf(server.url, rotated.accessToken, me.userId);
    // Another login of the same user is not affected.
    const other = await auth(server.url).login({ username: me.username, password: me.password });

    const replay = await rejection(
      (async () => {
        // Outside any grace window: the old token is presented after the
        // successor was itself used.
        await auth(server.url).refresh({ refreshToken: rotated.refreshToken });
        await auth(server.url).refresh({ refreshToken: me.refreshToken });
      })(),
    );
    expect(outcome(replay)).toEqual([Code.Unauthenticated, "REFRESH_TOKEN_REUSED"]);
    for (const token of [me.accessToken, rotated.accessToken]) {
      const err = await rejection(getSelf(server.url, token, me.userId));
      expect(outcome(err)).toEqual([Code.Unauthenticated, "TOKEN_REVOKED"]);
    }
    await getSelf(server.url, other.accessToken, me.userId);
  });

  it("refuses a validly signed token for a user that does not exist", async () => {
    const { token } = await createTokenService({
      key: KEY,
      accessTtlSeconds: 900,
    }).issueAccessToken({
      userId: uuidv7(),
      username: "ghost",
      roles: ["admin"],
      sessionId: uuidv7(),
    });
    const err = await rejection(getSelf(server.url, token, "anyone"));
    expect(outcome(err)).toEqual([Code.Unauthenticated, "TOKEN_INVALID"]);
  });
});

const redisUp = await requireRedis("revocation across instances");

describe.skipIf(!redisUp)("revocation across instances (Redis)", () => {
  const servers: TestServer[] = [];
  let store: Store | undefined;
  let dataDir: string;
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
    await store?.close();
  });

  it("a logout on one instance ends the access token on the other within a second", async () => {
    dataDir = await tempDataDir();
    store = await openStore({ dataDir });
    const shared = { store, dataDir, env: { ...KEY_ENV, REDIS_URL: TEST_REDIS_URL } };
    // Both close the shared store when they shut down; close() is idempotent.
    servers.push(await startTestServer(shared));
    servers.push(await startTestServer(shared));
    const [a, b] = servers as [TestServer, TestServer];
    const me = await registerAndLogin(a.url);
    await getSelf(b.url, me.accessToken, me.userId);
    await auth(a.url, me.accessToken).logout({ refreshToken: me.refreshToken });
    const loggedOut = Date.now();
    for (;;) {
      const err = await getSelf(b.url, me.accessToken, me.userId).then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
      if (err) {
        expect(outcome(err)).toEqual([Code.Unauthenticated, "TOKEN_REVOKED"]);
        break;
      }
      expect(Date.now() - loggedOut).toBeLessThan(1000);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
});
