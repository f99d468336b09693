import http from "node:http";
import { create, toBinary } from "@bufbuild/protobuf";
import { createClient, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { Health, HealthCheckResponse_ServingStatus } from "../../gen/health/v1/health_pb.js";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { GetUserRequestSchema, UserService } from "../../gen/switchboard/user/v1/user_pb.js";

/**
 * Single calls with real clients (connect-node), made by the runner itself
 * between load runs: seeding, the check before every load run, health.
 */

export type Protocol = "grpc" | "connect-h2" | "connect-h1" | "grpc-web-h1";

const noKeepAlive = new http.Agent({ keepAlive: false });

/** A transport for one protocol and a function that closes its connection. */
function transportFor(
  baseUrl: string,
  protocol: Protocol,
): { transport: Transport; close(): void } {
  if (protocol === "grpc" || protocol === "connect-h2") {
    const sessionManager = new Http2SessionManager(baseUrl);
    const transport =
      protocol === "grpc"
        ? createGrpcTransport({ baseUrl, sessionManager })
        : createConnectTransport({
            baseUrl,
            httpVersion: "2",
            sessionManager,
            useBinaryFormat: true,
          });
    return { transport, close: () => sessionManager.abort() };
  }
  const nodeOptions = { agent: noKeepAlive };
  const transport =
    protocol === "connect-h1"
      ? createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions, useBinaryFormat: true })
      : createGrpcWebTransport({ baseUrl, httpVersion: "1.1", nodeOptions, useBinaryFormat: true });
  return { transport, close: () => undefined };
}

const auth = (token: string | undefined) => (token ? { authorization: `Bearer ${token}` } : {});

/**
 * One GetUser with a real client; resolves with a description of what is
 * wrong, or undefined when the call succeeded and returned the user.
 */
export async function checkGetUser(
  baseUrl: string,
  protocol: Protocol,
  userId: string,
  token: string | undefined,
): Promise<string | undefined> {
  const { transport, close } = transportFor(baseUrl, protocol);
  try {
    const res = await createClient(UserService, transport).getUser(
      { id: userId },
      { headers: auth(token), timeoutMs: 10_000 },
    );
    return res.user?.id === userId ? undefined : `GetUser returned ${res.user?.id ?? "no user"}`;
  } catch (err) {
    return `GetUser over ${protocol} failed: ${String(err)}`;
  } finally {
    close();
  }
}

/** Registers a user and logs in (Connect over HTTP/1.1, like the test suite). */
export async function registerAndLogin(
  baseUrl: string,
  username: string,
): Promise<{ userId: string; token: string }> {
  const { transport } = transportFor(baseUrl, "connect-h1");
  const password = "correct horse battery";
  const { user } = await createClient(UserService, transport).registerUser(
    { username, email: `${username}@example.com`, password, displayName: "Bench User" },
    { timeoutMs: 20_000 },
  );
  const login = await createClient(AuthService, transport).login(
    { username, password },
    { timeoutMs: 20_000 },
  );
  return { userId: user!.id, token: login.accessToken };
}

/** grpc.health.v1.Health/Check over gRPC; true when the server says SERVING. */
export async function healthy(baseUrl: string, timeoutMs = 1000): Promise<boolean> {
  const { transport, close } = transportFor(baseUrl, "grpc");
  try {
    const res = await createClient(Health, transport).check({}, { timeoutMs });
    return res.status === HealthCheckResponse_ServingStatus.SERVING;
  } catch {
    return false;
  } finally {
    close();
  }
}

/** The GetUserRequest body: plain protobuf (Connect) or in a 5-byte envelope (gRPC, gRPC-Web). */
export function getUserRequestBody(userId: string, enveloped: boolean): Buffer {
  const message = Buffer.from(
    toBinary(GetUserRequestSchema, create(GetUserRequestSchema, { id: userId })),
  );
  if (!enveloped) return message;
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}
