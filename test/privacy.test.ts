import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UserService } from "../gen/switchboard/user/v1/user_pb.js";
import { ADMIN_USERNAME, bearer, registerAndLogin, type Session } from "./support/auth.js";
import { startTestServer, type TestServer } from "./support/server.js";

/** Every way UserService answers with a user, as `viewer` sees `subject`. */
async function viewsOf(server: TestServer, viewer: Session, subject: Session) {
  const transports = {
    connect: createConnectTransport({
      baseUrl: server.url,
      httpVersion: "1.1",
      interceptors: [bearer(viewer.accessToken)],
    }),
    grpc: createGrpcTransport({ baseUrl: server.url, interceptors: [bearer(viewer.accessToken)] }),
  };
  const views: Record<string, { username: string; email: string } | undefined> = {};
  for (const [protocol, transport] of Object.entries(transports)) {
    const users = createClient(UserService, transport);
    views[`${protocol} GetUser`] = (await users.getUser({ id: subject.userId })).user;
    for await (const item of users.getUserStream({ ids: [subject.userId] })) {
      views[`${protocol} GetUserStream`] =
        item.result.case === "user" ? item.result.value : undefined;
    }
    for await (const item of users.watchUsers({})) {
      if (item.user?.id === subject.userId) {
        views[`${protocol} WatchUsers`] = item.user;
        break;
      }
    }
  }
  return Object.fromEntries(
    Object.entries(views).map(([k, v]) => [k, v && { username: v.username, email: v.email }]),
  );
}

const every = (value: unknown) =>
  Object.fromEntries(
    ["connect", "grpc"].flatMap((p) =>
      ["GetUser", "GetUserStream", "WatchUsers"].map((m) => [`${p} ${m}`, value]),
    ),
  );

describe("UserService privacy", () => {
  let server: TestServer;
  let ada: Session;
  let bob: Session;
  let admin: Session;

  beforeAll(async () => {
    server = await startTestServer();
    ada = await registerAndLogin(server.url);
    bob = await registerAndLogin(server.url);
    admin = await registerAndLogin(server.url, { username: ADMIN_USERNAME });
  });
  afterAll(() => server.close());

  it("shows another user only the public profile, without the email", async () => {
    expect(await viewsOf(server, bob, ada)).toEqual(every({ username: ada.username, email: "" }));
  });

  it("shows users their own email", async () => {
    expect(await viewsOf(server, ada, ada)).toEqual(
      every({ username: ada.username, email: `${ada.username}@example.com` }),
    );
  });

  it("shows admins every user's email", async () => {
    expect(await viewsOf(server, admin, ada)).toEqual(
      every({ username: ada.username, email: `${ada.username}@example.com` }),
    );
  });
});
