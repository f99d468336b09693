import { createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";

/** The username the test harness configures as admin (ADMIN_USERNAMES). */
export const ADMIN_USERNAME = "admin";

/** A user registered and logged in through the public API. */
export interface Session {
  readonly userId: string;
  readonly username: string;
  readonly password: string;
  readonly accessToken: string;
  readonly refreshToken: string;
}

let counter = 0;

/**
 * Registers a user (a fresh name unless `username` is given) and logs in,
 * over the Connect protocol like any client would.
 */
export async function registerAndLogin(
  baseUrl: string,
  options: { username?: string; password?: string } = {},
): Promise<Session> {
  const transport = createConnectTransport({ baseUrl, httpVersion: "1.1" });
  const username = options.username ?? `user${process.pid}x${Date.now() % 1e6}x${counter++}`;
  const password = options.password ?? "correct horse battery";
  const { user } = await createClient(UserService, transport).registerUser({
    username,
    email: `${username}@example.com`,
    password,
  });
  const login = await createClient(AuthService, transport).login({ username, password });
  return {
    userId: user!.id,
    username,
    password,
    accessToken: login.accessToken,
    refreshToken: login.refreshToken,
  };
}

/** A client interceptor that sends `authorization: Bearer <token>`. */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Metadata for call options: `{ headers: auth(token) }`. */
export function auth(token: string): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

/** Re-exported for tests that build their own transports. */
export type { Transport };
