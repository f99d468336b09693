import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { type Logger, pino } from "pino";
import { describe, expect, it } from "vitest";
import { RequestInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { kRequestId } from "../context.js";
import { unavailable } from "../errors.js";
import { errorInterceptor } from "./error-interceptor.js";

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const logger: Logger = pino(
    { level: "info" },
    { write: (line: string) => lines.push(JSON.parse(line)) },
  );
  return { logger, lines };
}

/** The ConnectError a call fails with; fails the test if the call succeeds. */
async function rejectionOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (e) {
    return ConnectError.from(e);
  }
  throw new Error("expected the call to fail");
}

function clientFor(impl: Parameters<typeof createRouterTransport>[0], logger: Logger) {
  return createClient(
    UserService,
    createRouterTransport(impl, { router: { interceptors: [errorInterceptor(logger)] } }),
  );
}

describe("errorInterceptor", () => {
  it("quotes the call's request id in the Internal error, as RequestInfo and in the message", async () => {
    const { logger } = capture();
    const client = createClient(
      UserService,
      createRouterTransport(
        ({ service }) =>
          service(UserService, {
            getUser() {
              throw new Error("bug");
            },
          }),
        {
          router: {
            interceptors: [
              (next) => (req) => {
                req.contextValues.set(kRequestId, "req-42");
                return next(req);
              },
              errorInterceptor(logger),
            ],
          },
        },
      ),
    );
    const err = await rejectionOf(client.getUser({ id: "x" }));
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error (request id req-42)");
    expect(err.findDetails(RequestInfoSchema)[0]?.requestId).toBe("req-42");
  });

  it("turns a thrown bug into Internal without leaking its message, and logs the stack", async () => {
    const { logger, lines } = capture();
    const client = clientFor(
      ({ service }) =>
        service(UserService, {
          getUser() {
            throw new TypeError("cannot read properties of undefined (reading 'secret_column')");
          },
        }),
      logger,
    );
    const err = await rejectionOf(client.getUser({ id: "x" }));
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error");
    expect(JSON.stringify(err)).not.toContain("secret_column");
    const logged = lines.find((l) => l.msg === "unexpected error in handler");
    expect(JSON.stringify(logged)).toContain("secret_column");
    expect(String((logged?.err as { stack?: string } | undefined)?.stack)).toContain("TypeError");
  });

  it("does the same for a bug thrown mid-stream, after messages were sent", async () => {
    const { logger, lines } = capture();
    const client = clientFor(
      ({ service }) =>
        service(UserService, {
          async *getUserStream() {
            yield { id: "a" };
            throw new RangeError("/srv/switchboard/secret.ts:42");
          },
        }),
      logger,
    );
    const received: string[] = [];
    const err = await (async () => {
      for await (const item of client.getUserStream({ ids: ["a"] })) received.push(item.id);
    })().catch((e: unknown) => ConnectError.from(e));
    expect(received).toEqual(["a"]);
    expect(err?.code).toBe(Code.Internal);
    expect(err?.rawMessage).toBe("internal error");
    expect(lines.some((l) => JSON.stringify(l).includes("secret.ts:42"))).toBe(true);
  });

  it("passes typed errors through and logs only the cause of server-side failures", async () => {
    const { logger, lines } = capture();
    const client = clientFor(
      ({ service }) =>
        service(UserService, {
          getUser() {
            throw unavailable("database unavailable", new Error("ECONNREFUSED 10.0.0.1:5432"));
          },
        }),
      logger,
    );
    const err = await rejectionOf(client.getUser({ id: "x" }));
    expect(err.code).toBe(Code.Unavailable);
    expect(err.rawMessage).toBe("database unavailable");
    expect(JSON.stringify(err)).not.toContain("ECONNREFUSED");
    expect(lines.some((l) => JSON.stringify(l).includes("ECONNREFUSED"))).toBe(true);
  });
});
