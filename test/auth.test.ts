import { join } from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { AuthService } from "../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { createTokenService } from "../server/src/auth/tokens.js";
import { toRpcError } from "../shared/rpc-error.js";
import { ADMIN_USERNAME, bearer, registerAndLogin } from "./support/auth.js";
import { ROOT, startTestServer, type TestServer, tempDataDir } from "./support/server.js";

const KEY = Buffer.alloc(32, 42);
const KEY_ENV = { AUTH_SIGNING_KEY: KEY.toString("base64url") };

type Protocol = "connect" | "grpc-web" | "grpc";
const PROTOCOLS: readonly Protocol[] = ["connect", "grpc-web", "grpc"];

function transport(
  protocol: Protocol,
  baseUrl: string,
  interceptors: Interceptor[] = [],
): Transport {
  switch (protocol) {
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1", interceptors });
    case "grpc":
      return createGrpcTransport({ baseUrl, interceptors });
  }
}

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

const reason = (err: ConnectError) => err.findDetails(ErrorInfoSchema)[0]?.reason;

/** One call of each kind UserService has; each needs a valid token. */
function callKinds(client: ReturnType<typeof createClient<typeof UserService>>) {
  return {
    unary: () => client.getUser({ id: "someone" }),
    "server stream": async () => {
      for await (const _ of client.getUserStream({ ids: ["someone"] }));
    },
    "client stream": () =>
      client.createUsers(
        (async function* () {
          yield { username: "streamed", email: "streamed@example.com", password: "password-1" };
        })(),
      ),
  };
}

function b64url(json: unknown): string {
  return Buffer.from(JSON.stringify(json)).toString("base64url");
}

describe("auth via metadata", () => {
  let server: TestServer;
  let user: Awaited<ReturnType<typeof registerAndLogin>>;
  const forged: Record<string, string> = {};

  beforeAll(async () => {
    server = await startTestServer({ env: KEY_ENV });
    user = await registerAndLogin(server.url);
    const claims = {
      userId: user.userId,
      username: user.username,
      roles: ["user"],
      sessionId: "s1",
    };
    const anHourAgo = () => new Date(Date.now() - 3600_000);
    forged.expired = (
      await createTokenService({
        key: KEY,
        accessTtlSeconds: 900,
        now: anHourAgo,
      }).issueAccessToken(claims)
    ).token;
    forged["wrong key"] = (
      await createTokenService({
        key: Buffer.alloc(32, 7),
        accessTtlSeconds: 900,
      }).issueAccessToken(claims)
    ).token;
    const [header, payload, signature] = user.accessToken.split(".") as [string, string, string];
    const claimsJson = JSON.parse(Buffer.from(payload, "base64url").toString());
    forged.tampered = `${header}.${b64url({ ...claimsJson, roles: ["admin"] })}.${signature}`;
    forged["alg none"] = `${b64url({ alg: "none", typ: "at+jwt" })}.${b64url(claimsJson)}.`;
    forged.garbage = "not.a.jwt";
  });
  afterAll(() => server.close());

  for (const protocol of PROTOCOLS) {
    describe(`over ${protocol}`, () => {
      it("refuses every call kind without a token: Unauthenticated, TOKEN_MISSING", async () => {
        const client = createClient(UserService, transport(protocol, server.url));
        for (const [kind, call] of Object.entries(callKinds(client))) {
          const err = await rejection(call());
          expect([kind, err.code]).toEqual([kind, Code.Unauthenticated]);
          expect([kind, reason(err)]).toEqual([kind, "TOKEN_MISSING"]);
        }
      });

      it("says TOKEN_EXPIRED for an expired token, on every call kind", async () => {
        const client = createClient(
          UserService,
          transport(protocol, server.url, [bearer(forged.expired!)]),
        );
        for (const [kind, call] of Object.entries(callKinds(client))) {
          const err = await rejection(call());
          expect([kind, err.code, reason(err)]).toEqual([
            kind,
            Code.Unauthenticated,
            "TOKEN_EXPIRED",
          ]);
        }
      });

      it("says TOKEN_INVALID for tampered, wrong-key, alg:none and garbage tokens", async () => {
        for (const name of ["tampered", "wrong key", "alg none", "garbage"]) {
          const client = createClient(
            UserService,
            transport(protocol, server.url, [bearer(forged[name]!)]),
          );
          const { unary, "server stream": stream } = callKinds(client);
          for (const call of [unary, stream]) {
            const err = await rejection(call());
            expect([name, err.code, reason(err)]).toEqual([
              name,
              Code.Unauthenticated,
              "TOKEN_INVALID",
            ]);
          }
        }
      });

      it("accepts a valid token on every call kind (CreateUsers then needs the admin role)", async () => {
        const client = createClient(
          UserService,
          transport(protocol, server.url, [bearer(user.accessToken)]),
        );
        const calls = callKinds(client);
        expect((await rejection(calls.unary())).code).toBe(Code.NotFound);
        await calls["server stream"]();
        const err = await rejection(calls["client stream"]());
        expect([err.code, reason(err)]).toEqual([Code.PermissionDenied, "ROLE_REQUIRED"]);
      });
    });
  }

  it("rejects an authorization header that is not a Bearer token", async () => {
    const client = createClient(
      UserService,
      transport("grpc", server.url, [
        (next) => (req) => {
          req.header.set("authorization", `Basic ${Buffer.from("a:b").toString("base64")}`);
          return next(req);
        },
      ]),
    );
    const err = await rejection(client.getUser({ id: "x" }));
    expect([err.code, reason(err)]).toEqual([Code.Unauthenticated, "TOKEN_INVALID"]);
  });
});

describe("sessions over the wire", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: KEY_ENV });
  });
  afterAll(() => server.close());

  for (const protocol of ["grpc", "connect"] as const) {
    it(`rotates on refresh, answers a retry with the same successor, and revokes the family when a rotated token is replayed after its successor was used (${protocol})`, async () => {
      const { refreshToken } = await registerAndLogin(server.url);
      const auth = createClient(AuthService, transport(protocol, server.url));
      const first = await auth.refresh({ refreshToken });
      expect(first.refreshToken).not.toBe(refreshToken);
      // The new access token works.
      const users = createClient(
        UserService,
        transport(protocol, server.url, [bearer(first.accessToken)]),
      );
      expect((await users.getUser({ id: first.user!.id })).user?.username).toBe(
        first.user?.username,
      );

      // Within the grace window a retry gets the same successor; once that
      // successor has been used, the old token coming back means theft.
      const retried = await auth.refresh({ refreshToken });
      expect(retried.refreshToken).toBe(first.refreshToken);
      const second = await auth.refresh({ refreshToken: first.refreshToken });
      const replay = await rejection(auth.refresh({ refreshToken }));
      expect([replay.code, reason(replay)]).toEqual([Code.Unauthenticated, "REFRESH_TOKEN_REUSED"]);
      // Theft detection: the newest token of the family is dead too.
      const after = await rejection(auth.refresh({ refreshToken: second.refreshToken }));
      expect([after.code, reason(after)]).toEqual([Code.Unauthenticated, "REFRESH_TOKEN_INVALID"]);
    });
  }

  it("revokes the session on logout", async () => {
    const session = await registerAndLogin(server.url);
    const auth = createClient(
      AuthService,
      transport("grpc-web", server.url, [bearer(session.accessToken)]),
    );
    await auth.logout({ refreshToken: session.refreshToken });
    const err = await rejection(auth.refresh({ refreshToken: session.refreshToken }));
    expect([err.code, reason(err)]).toEqual([Code.Unauthenticated, "REFRESH_TOKEN_INVALID"]);
  });

  it("lets an admin bulk-import and refuses others with PermissionDenied", async () => {
    const admin = await registerAndLogin(server.url, { username: ADMIN_USERNAME });
    const other = await registerAndLogin(server.url);
    const one = async function* () {
      yield { username: "imported1", email: "imported1@example.com", password: "password-1" };
    };
    const asAdmin = createClient(
      UserService,
      transport("grpc", server.url, [bearer(admin.accessToken)]),
    );
    expect((await asAdmin.createUsers(one())).createdCount).toBe(1);
    const asOther = createClient(
      UserService,
      transport("grpc", server.url, [bearer(other.accessToken)]),
    );
    const err = await rejection(asOther.createUsers(one()));
    expect([err.code, reason(err)]).toEqual([Code.PermissionDenied, "ROLE_REQUIRED"]);
  });

  it("promotes a configured admin who registered before being configured, at start-up", async () => {
    const dataDir = await tempDataDir();
    const before = await startTestServer({ dataDir, env: { ...KEY_ENV, ADMIN_USERNAMES: "" } });
    await registerAndLogin(before.url, { username: "boss", password: "correct horse battery" });
    await before.close();
    const after = await startTestServer({ dataDir, env: { ...KEY_ENV, ADMIN_USERNAMES: "Boss" } });
    try {
      const login = await createClient(AuthService, transport("grpc", after.url)).login({
        username: "boss",
        password: "correct horse battery",
      });
      const users = createClient(
        UserService,
        transport("grpc", after.url, [bearer(login.accessToken)]),
      );
      const res = await users.createUsers(
        (async function* () {
          yield { username: "bossimport", email: "bossimport@example.com", password: "password-1" };
        })(),
      );
      expect(res.createdCount).toBe(1);
    } finally {
      await after.close();
    }
  });
});

describe("login rate limit", () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ env: { ...KEY_ENV, RATE_LIMIT_LOGIN: "3/60" } });
  });
  afterAll(() => server.close());

  it("answers the N+1th rapid login with ResourceExhausted, QuotaFailure and RetryInfo, readable by connect and grpc-js", async () => {
    const auth = createClient(AuthService, transport("connect", server.url));
    for (let i = 0; i < 3; i++) {
      const err = await rejection(auth.login({ username: "nobody", password: "wrong password" }));
      expect(reason(err)).toBe("INVALID_CREDENTIALS");
    }
    // connect: findDetails
    const limited = await rejection(auth.login({ username: "nobody", password: "wrong password" }));
    expect(limited.code).toBe(Code.ResourceExhausted);
    const quota = limited.findDetails(QuotaFailureSchema)[0];
    expect(quota?.violations[0]?.subject).toBe("login:ip:127.0.0.1");
    expect(quota?.violations[0]?.description).toMatch(/3 logins per 60 s/);
    const retry = limited.findDetails(RetryInfoSchema)[0];
    expect(Number(retry?.retryDelay?.seconds)).toBeGreaterThan(0);
    expect(Number(retry?.retryDelay?.seconds)).toBeLessThanOrEqual(60);
    const typed = toRpcError(limited);
    expect(typed.kind).toBe("rate_limited");
    expect(typed.retryDelayMs).toBeGreaterThan(0);

    // grpc-js: grpc-status-details-bin → google.rpc.Status → Any
    const definition = protoLoader.loadSync("switchboard/auth/v1/auth.proto", {
      includeDirs: [join(ROOT, "proto"), join(ROOT, "node_modules/google-proto-files")],
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      switchboard: { auth: { v1: { AuthService: grpc.ServiceClientConstructor } } };
    };
    const client = new pkg.switchboard.auth.v1.AuthService(
      `127.0.0.1:${server.port}`,
      grpc.credentials.createInsecure(),
    );
    try {
      const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
        client.Login(
          { username: "nobody", password: "wrong password" },
          { deadline: Date.now() + 10_000 },
          (e: grpc.ServiceError | null) => (e ? resolve(e) : reject(new Error("login succeeded"))),
        ),
      );
      expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      const bin = err.metadata.get("grpc-status-details-bin")[0] as Buffer;
      const status = fromBinary(StatusSchema, bin);
      expect(status.code).toBe(Code.ResourceExhausted);
      const quotaFailure = status.details
        .map((a) => anyUnpack(a, QuotaFailureSchema))
        .find(Boolean);
      const retryInfo = status.details.map((a) => anyUnpack(a, RetryInfoSchema)).find(Boolean);
      expect(quotaFailure?.violations[0]?.subject).toBe("login:ip:127.0.0.1");
      expect(Number(retryInfo?.retryDelay?.seconds)).toBeGreaterThan(0);
    } finally {
      client.close();
    }
  });
});
