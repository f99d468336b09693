import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { QuotaFailureSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { AuthService } from "../gen/switchboard/auth/v1/auth_pb.js";
import { verifyPassword } from "../server/src/auth/passwords.js";
import { registerAndLogin, type Session } from "./support/auth.js";
import { startTestServer, type TestServer } from "./support/server.js";

/**
 * Login throttling over the wire. Each client IP is a loopback source
 * address (127.0.0.x): the server sees the socket's remote address.
 */

const LIMITS = {
  LOGIN_FAILS_PER_ACCOUNT: "6/3600",
  LOGIN_FAILS_PER_ACCOUNT_AND_IP: "3",
  LOGIN_FAILS_PER_IP: "50/3600",
  LOGIN_LOCKOUT_SECONDS: "60",
};

let server: TestServer;
let verifications = 0;
let user: Session;

beforeAll(async () => {
  server = await startTestServer({
    env: LIMITS,
    verifyPassword: (phc, password) => {
      verifications++;
      return verifyPassword(phc, password);
    },
  });
});
afterAll(() => server.close());

beforeEach(async () => {
  // The user registers and logs in from 127.0.0.1: a known IP from now on.
  user = await registerAndLogin(server.url);
});

/** An AuthService client whose connections come from `ip` (a loopback address). */
function authFrom(ip: string, protocol: "connect" | "grpc-web" = "connect") {
  const options = { baseUrl: server.url, httpVersion: "1.1", nodeOptions: { localAddress: ip } };
  const transport =
    protocol === "connect"
      ? createConnectTransport({ ...options, httpVersion: "1.1" })
      : createGrpcWebTransport({ ...options, httpVersion: "1.1" });
  return createClient(AuthService, transport);
}

async function attempt(ip: string, password: string, protocol?: "connect" | "grpc-web") {
  try {
    await authFrom(ip, protocol).login({ username: user.username, password });
    return { code: "OK" };
  } catch (e) {
    const err = ConnectError.from(e);
    return {
      code: Code[err.code],
      subject: err.findDetails(QuotaFailureSchema)[0]?.violations[0]?.subject,
      retrySeconds: Number(err.findDetails(RetryInfoSchema)[0]?.retryDelay?.seconds ?? -1),
    };
  }
}

describe("login throttling over the wire", () => {
  it("refuses wrong passwords for one account from many IPs with RESOURCE_EXHAUSTED and RetryInfo, unchecked", async () => {
    // Two failures each from three attacker IPs: six, the account's limit.
    for (const ip of ["127.0.0.2", "127.0.0.3", "127.0.0.4"]) {
      for (let i = 0; i < 2; i++) {
        expect((await attempt(ip, "wrong password")).code).toBe("Unauthenticated");
      }
    }
    const checked = verifications;
    for (const [ip, protocol] of [
      ["127.0.0.5", "connect"],
      ["127.0.0.6", "grpc-web"],
      ["127.0.0.2", "connect"],
    ] as const) {
      const refused = await attempt(ip, "wrong password", protocol);
      expect(refused).toMatchObject({
        code: "ResourceExhausted",
        subject: `login-fails:account:${user.username}`,
      });
      expect(refused.retrySeconds).toBeGreaterThan(0);
    }
    // argon2 never ran for the refused attempts.
    expect(verifications).toBe(checked);

    // Meanwhile the real user, from the IP they logged in from before, gets in.
    expect(await attempt("127.0.0.1", user.password)).toEqual({ code: "OK" });
    expect(verifications).toBe(checked + 1);
  });

  it("locks one IP out of one account after consecutive failures; a success in between resets the count", async () => {
    const ip = "127.0.0.1";
    for (let round = 0; round < 3; round++) {
      expect((await attempt(ip, "wrong password")).code).toBe("Unauthenticated");
      expect((await attempt(ip, "wrong password")).code).toBe("Unauthenticated");
      expect(await attempt(ip, user.password)).toEqual({ code: "OK" });
    }
    for (let i = 0; i < 3; i++) {
      expect((await attempt(ip, "wrong password")).code).toBe("Unauthenticated");
    }
    const checked = verifications;
    expect(await attempt(ip, user.password)).toEqual({
      code: "ResourceExhausted",
      subject: `login-fails:account:${user.username}:ip:${ip}`,
      retrySeconds: 60,
    });
    expect(verifications).toBe(checked);
  });
});
