import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { BadRequestSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { appServices } from "../routes.js";
import { appRequestRules } from "./request-rules.js";
import { validationInterceptor } from "./validation-interceptor.js";

async function rejection(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

describe("validationInterceptor", () => {
  it("has a rule or a stated exemption for the request of every method Switchboard serves", () => {
    const missing = appServices
      .flatMap((s) => s.methods)
      .map((m) => m.input.typeName)
      .filter((t) => !appRequestRules.schemas.has(t) && !appRequestRules.exempt.has(t));
    expect(missing).toEqual([]);
  });

  const handled: string[] = [];
  const client = createClient(
    UserService,
    createRouterTransport(
      ({ service }) =>
        service(UserService, {
          getUser(req) {
            handled.push(req.id);
            return {};
          },
          async *getUserStream(req) {
            handled.push(...req.ids);
            yield { id: req.ids[0] ?? "" };
          },
        }),
      { router: { interceptors: [validationInterceptor(appRequestRules)] } },
    ),
  );

  it("stops an invalid unary request before the handler, naming the field", async () => {
    const err = await rejection(client.getUser({ id: "" }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations).toMatchObject([
      { field: "id", description: "is required" },
    ]);
    expect(handled).toEqual([]);
  });

  it("validates the request of a server stream too", async () => {
    const err = await rejection(
      (async () => {
        for await (const _ of client.getUserStream({ ids: ["ok", ""] }));
      })(),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field).toBe("ids[1]");
    expect(handled).toEqual([]);
  });

  it("lets a valid request through unchanged", async () => {
    await client.getUser({ id: "u-1" });
    expect(handled).toEqual(["u-1"]);
  });
});
