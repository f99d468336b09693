import { randomBytes } from "node:crypto";
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { ChatService } from "../../gen/switchboard/chat/v1/chat_pb.js";
import { type User, UserService } from "../../gen/switchboard/user/v1/user_pb.js";

/**
 * Seeding and peers over the real API from Node (connect-node, Connect
 * protocol over HTTP/1.1), as any client would.
 */

export const PASSWORD = "correct horse battery";

/** A fresh, valid username: `prefix` plus random letters (≤ 32 characters). */
export function uniqueName(prefix = "user"): string {
  return `${prefix.slice(0, 16)}${randomBytes(6).toString("hex")}`;
}

export interface ApiUser {
  readonly user: User;
  readonly username: string;
  readonly password: string;
  readonly accessToken: string;
  readonly refreshToken: string;
}

function bearer(token: () => string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token()}`);
    return next(req);
  };
}

/** Clients of one server for tests. */
export function api(baseUrl: string) {
  const transport = createConnectTransport({ baseUrl, httpVersion: "1.1" });
  const users = createClient(UserService, transport);
  const auth = createClient(AuthService, transport);

  async function register(
    options: { username?: string; displayName?: string; password?: string } = {},
  ): Promise<{ user: User; username: string; password: string }> {
    const username = options.username ?? uniqueName();
    const password = options.password ?? PASSWORD;
    const { user } = await users.registerUser({
      username,
      email: `${username}@example.com`,
      password,
      displayName: options.displayName ?? "",
    });
    return { user: user!, username, password };
  }

  async function login(username: string, password = PASSWORD): Promise<ApiUser> {
    const res = await auth.login({ username, password });
    return {
      user: res.user!,
      username,
      password,
      accessToken: res.accessToken,
      refreshToken: res.refreshToken,
    };
  }

  /** Registers a fresh user and logs them in. */
  async function registerAndLogin(
    options: { username?: string; displayName?: string } = {},
  ): Promise<ApiUser> {
    const r = await register(options);
    return login(r.username, r.password);
  }

  /** Clients that act as `who` (chat, users). */
  function as(who: ApiUser) {
    const authed = createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      interceptors: [bearer(() => who.accessToken)],
    });
    return {
      users: createClient(UserService, authed),
      auth: createClient(AuthService, authed),
      chat: createClient(ChatService, authed),
    };
  }

  return { users, auth, register, login, registerAndLogin, as };
}
