import { execFile } from "node:child_process";
import { createServer, type Http2Server, type ServerHttp2Session } from "node:http2";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  create,
  createFileRegistry,
  fromBinary,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import {
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
  MethodOptions_IdempotencyLevel,
} from "@bufbuild/protobuf/wkt";
import {
  Code,
  createClient,
  createRouterTransport,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ServerReflection,
  type ServerReflectionRequestSchema,
  type ServerReflectionResponse,
} from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Health } from "../../../gen/health/v1/health_pb.js";
import { UserSchema, UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { registerReflection } from "./reflection.js";

type RequestInit = MessageInitShape<typeof ServerReflectionRequestSchema>;

/**
 * One reflection stream driven request by request, so a test can see that
 * each request is answered before the next is sent (a client that sent
 * everything up front could not tell a stream that ended from one that
 * answered late).
 */
function openStream(transport: Transport) {
  const pending: RequestInit[] = [];
  let wake: (() => void) | undefined;
  let closed = false;
  async function* requests() {
    for (;;) {
      const next = pending.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      if (closed) return;
      await new Promise<void>((resolve) => {
        wake = resolve;
      });
    }
  }
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const client = createClient(ServerReflection, transport);
  const responses = client.serverReflectionInfo(requests())[Symbol.asyncIterator]();
  return {
    async ask(request: RequestInit): Promise<ServerReflectionResponse> {
      pending.push(request);
      notify();
      const next = await responses.next();
      if (next.done) throw new Error("reflection stream ended before answering");
      return next.value;
    },
    /** Half-closes and resolves once the server has ended the stream. */
    async close(): Promise<IteratorResult<ServerReflectionResponse>> {
      closed = true;
      notify();
      return responses.next();
    },
  };
}

async function askOnce(transport: Transport, request: RequestInit) {
  const stream = openStream(transport);
  const response = await stream.ask(request);
  await stream.close();
  return response;
}

function decodeFiles(response: ServerReflectionResponse): FileDescriptorProto[] {
  if (response.messageResponse.case !== "fileDescriptorResponse") {
    throw new Error(`expected file descriptors, got ${response.messageResponse.case}`);
  }
  return response.messageResponse.value.fileDescriptorProto.map((bytes) =>
    fromBinary(FileDescriptorProtoSchema, bytes),
  );
}

const fileNames = (response: ServerReflectionResponse) => decodeFiles(response).map((f) => f.name);

function errorOf(response: ServerReflectionResponse) {
  if (response.messageResponse.case !== "errorResponse") {
    throw new Error(`expected an error response, got ${response.messageResponse.case}`);
  }
  return response.messageResponse.value;
}

const USER_FILE = "switchboard/user/v1/user.proto";
/** user.proto's transitive imports: status.proto pulls in any.proto. */
const USER_DEPS = [
  "google/protobuf/any.proto",
  "google/protobuf/timestamp.proto",
  "google/rpc/code.proto",
  "google/rpc/status.proto",
];

describe("ServerReflection", () => {
  const transport = createRouterTransport((router) =>
    registerReflection(router, [UserService, Health]),
  );

  it("lists every registered service on v1 and v1alpha", async () => {
    const expected = [
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "switchboard.user.v1.UserService",
    ];
    const v1 = await askOnce(transport, {
      messageRequest: { case: "listServices", value: "*" },
    });
    expect(v1.messageResponse.case).toBe("listServicesResponse");
    expect(
      v1.messageResponse.case === "listServicesResponse" &&
        v1.messageResponse.value.service.map((s) => s.name),
    ).toEqual(expected);

    const alpha = createClient(ServerReflectionV1Alpha, transport);
    const names: string[] = [];
    async function* oneRequest() {
      yield { messageRequest: { case: "listServices", value: "" } } as const;
    }
    for await (const res of alpha.serverReflectionInfo(oneRequest())) {
      expect(res.messageResponse.case).toBe("listServicesResponse");
      if (res.messageResponse.case === "listServicesResponse") {
        names.push(...res.messageResponse.value.service.map((s) => s.name));
      }
    }
    expect(names).toEqual(expected);
  });

  it("answers file_containing_symbol for every error detail type Switchboard sends", async () => {
    // grpcurl looks up the type of each detail in grpc-status-details-bin
    // by symbol to print it decoded instead of "is not recognized".
    for (const symbol of [
      "google.rpc.BadRequest",
      "google.rpc.ErrorInfo",
      "google.rpc.RetryInfo",
      "google.rpc.QuotaFailure",
    ]) {
      const res = await askOnce(transport, {
        messageRequest: { case: "fileContainingSymbol", value: symbol },
      });
      expect(res.messageResponse.case).toBe("fileDescriptorResponse");
      const files =
        res.messageResponse.case === "fileDescriptorResponse"
          ? res.messageResponse.value.fileDescriptorProto.map(
              (bytes) => fromBinary(FileDescriptorProtoSchema, bytes).name,
            )
          : [];
      expect(files[0]).toBe("google/rpc/error_details.proto");
    }
  });

  it("echoes the host and the original request in every response", async () => {
    const request = {
      host: "switchboard.example:443",
      messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.Health" },
    } as const;
    const ok = await askOnce(transport, request);
    expect(ok.validHost).toBe("switchboard.example:443");
    expect(ok.originalRequest?.host).toBe("switchboard.example:443");
    expect(ok.originalRequest?.messageRequest).toEqual(request.messageRequest);

    const failed = await askOnce(transport, {
      host: "h",
      messageRequest: { case: "fileByFilename", value: "nope.proto" },
    });
    expect(failed.validHost).toBe("h");
    expect(failed.originalRequest?.messageRequest).toEqual({
      case: "fileByFilename",
      value: "nope.proto",
    });
  });

  it.each([
    ["service", "switchboard.user.v1.UserService"],
    ["method", "switchboard.user.v1.UserService.GetUser"],
    ["message", "switchboard.user.v1.User"],
    ["nested message", "switchboard.user.v1.CreateUsersResponse.Failure"],
    ["field", "switchboard.user.v1.User.create_time"],
    ["oneof", "switchboard.user.v1.GetUserStreamResponse.result"],
  ])(
    "answers file_containing_symbol for a %s with its file and all transitive imports",
    async (_kind, symbol) => {
      const names = fileNames(
        await askOnce(transport, {
          messageRequest: { case: "fileContainingSymbol", value: symbol },
        }),
      );
      // Clients read the first file as the one that declares the symbol.
      expect(names[0]).toBe(USER_FILE);
      expect(names.slice(1).sort()).toEqual(USER_DEPS);
    },
  );

  it.each([
    ["enum", "grpc.health.v1.HealthCheckResponse.ServingStatus", "health/v1/health.proto"],
    // protobuf scopes enum values as siblings of their enum.
    ["enum value", "grpc.health.v1.HealthCheckResponse.SERVING", "health/v1/health.proto"],
    ["top-level enum in a dependency", "google.rpc.Code", "google/rpc/code.proto"],
    ["message in a dependency", "google.protobuf.Timestamp", "google/protobuf/timestamp.proto"],
    [
      "reflection method",
      "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
      "grpc/reflection/v1alpha/reflection.proto",
    ],
  ])("answers file_containing_symbol for a %s", async (_kind, symbol, file) => {
    const names = fileNames(
      await askOnce(transport, { messageRequest: { case: "fileContainingSymbol", value: symbol } }),
    );
    expect(names[0]).toBe(file);
  });

  it("answers file_by_filename with the file and its transitive imports", async () => {
    const user = fileNames(
      await askOnce(transport, { messageRequest: { case: "fileByFilename", value: USER_FILE } }),
    );
    expect(user[0]).toBe(USER_FILE);
    expect(user.slice(1).sort()).toEqual(USER_DEPS);

    const status = fileNames(
      await askOnce(transport, {
        messageRequest: { case: "fileByFilename", value: "google/rpc/status.proto" },
      }),
    );
    expect(status).toEqual(["google/rpc/status.proto", "google/protobuf/any.proto"]);
  });

  it("answers unknown symbols and files with NOT_FOUND and keeps the stream open", async () => {
    const stream = openStream(transport);
    const symbol = errorOf(
      await stream.ask({
        messageRequest: { case: "fileContainingSymbol", value: "switchboard.user.v1.Nope" },
      }),
    );
    expect(symbol.errorCode).toBe(Code.NotFound);
    expect(symbol.errorCode).toBe(5);
    expect(symbol.errorMessage).toContain("switchboard.user.v1.Nope");

    // A symbol is matched exactly; a method written with a slash is unknown.
    const slashed = errorOf(
      await stream.ask({
        messageRequest: {
          case: "fileContainingSymbol",
          value: "switchboard.user.v1.UserService/GetUser",
        },
      }),
    );
    expect(slashed.errorCode).toBe(Code.NotFound);

    const file = errorOf(
      await stream.ask({ messageRequest: { case: "fileByFilename", value: "user.proto" } }),
    );
    expect(file.errorCode).toBe(Code.NotFound);

    const next = await stream.ask({
      messageRequest: { case: "fileContainingSymbol", value: "grpc.health.v1.Health" },
    });
    expect(fileNames(next)).toEqual(["health/v1/health.proto"]);
    expect((await stream.close()).done).toBe(true);
  });

  it("answers a request of no known kind with UNIMPLEMENTED in the stream", async () => {
    const stream = openStream(transport);
    const error = errorOf(await stream.ask({ host: "h" }));
    expect(error.errorCode).toBe(Code.Unimplemented);
    const list = await stream.ask({ messageRequest: { case: "listServices", value: "" } });
    expect(list.messageResponse.case).toBe("listServicesResponse");
    await stream.close();
  });

  it("sends each import once per stream but always the requested file", async () => {
    const stream = openStream(transport);
    const first = fileNames(
      await stream.ask({
        messageRequest: { case: "fileContainingSymbol", value: "switchboard.user.v1.User" },
      }),
    );
    expect(first).toHaveLength(1 + USER_DEPS.length);

    // Asked again, the file itself comes back but the imports are not resent.
    const again = fileNames(
      await stream.ask({
        messageRequest: {
          case: "fileContainingSymbol",
          value: "switchboard.user.v1.GetUserRequest",
        },
      }),
    );
    expect(again).toEqual([USER_FILE]);

    const status = fileNames(
      await stream.ask({
        messageRequest: { case: "fileByFilename", value: "google/rpc/status.proto" },
      }),
    );
    expect(status).toEqual(["google/rpc/status.proto"]);
    await stream.close();

    // A new stream starts from nothing.
    const fresh = fileNames(
      await askOnce(transport, {
        messageRequest: { case: "fileByFilename", value: "google/rpc/status.proto" },
      }),
    );
    expect(fresh).toEqual(["google/rpc/status.proto", "google/protobuf/any.proto"]);
  });

  it("serves descriptors that rebuild into a registry able to encode and decode User", async () => {
    const files = decodeFiles(
      await askOnce(transport, {
        messageRequest: {
          case: "fileContainingSymbol",
          value: "switchboard.user.v1.CreateUsersResponse.Failure",
        },
      }),
    );
    // Reflection sends the requested file first, not in the dependency order a
    // FileDescriptorSet needs, so resolve imports by name as clients do.
    const byName = new Map(files.map((f) => [f.name, f]));
    const registry = createFileRegistry(files[0]!, (name) => byName.get(name));
    const user = registry.getMessage("switchboard.user.v1.User");
    expect(user).toBeDefined();
    expect(
      registry
        .getFile(USER_FILE)
        ?.dependencies.map((d) => d.proto.name)
        .sort(),
    ).toEqual([
      "google/protobuf/timestamp.proto",
      "google/rpc/code.proto",
      "google/rpc/status.proto",
    ]);

    // Bytes written with the generated schema read back with the reflected one.
    const bytes = toBinary(
      UserSchema,
      create(UserSchema, {
        id: "u1",
        username: "ada",
        displayName: "Ada",
        createTime: { seconds: 1_700_000_000n },
      }),
    );
    const decoded = fromBinary(user!, bytes);
    expect(decoded.$typeName).toBe("switchboard.user.v1.User");
    const username = user!.fields.find((f) => f.name === "username")!;
    expect(username.jsonName).toBe("username");
    expect(toBinary(user!, decoded)).toEqual(bytes);
  });

  it("keeps json names and method options that generated code embeds", async () => {
    const [user] = decodeFiles(
      await askOnce(transport, { messageRequest: { case: "fileByFilename", value: USER_FILE } }),
    );
    const userMessage = user!.messageType.find((m) => m.name === "User")!;
    // protoc-gen-es strips default json_names when embedding; they are put back on load.
    expect(userMessage.field.find((f) => f.name === "display_name")?.jsonName).toBe("displayName");
    const getUser = user!.service[0]!.method.find((m) => m.name === "GetUser")!;
    expect(getUser.options?.idempotencyLevel).toBe(MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS);
    expect(user!.dependency.sort()).toEqual([
      "google/protobuf/timestamp.proto",
      "google/rpc/code.proto",
      "google/rpc/status.proto",
    ]);
    expect(user!.syntax).toBe("proto3");
  });

  it("reports no extensions for a known message and NOT_FOUND for unknown types", async () => {
    const stream = openStream(transport);
    const none = await stream.ask({
      messageRequest: { case: "allExtensionNumbersOfType", value: "switchboard.user.v1.User" },
    });
    expect(none.messageResponse).toEqual({
      case: "allExtensionNumbersResponse",
      value: expect.objectContaining({
        baseTypeName: "switchboard.user.v1.User",
        extensionNumber: [],
      }),
    });
    const unknownType = errorOf(
      await stream.ask({
        messageRequest: { case: "allExtensionNumbersOfType", value: "switchboard.user.v1.Nope" },
      }),
    );
    expect(unknownType.errorCode).toBe(Code.NotFound);
    const unknownExt = errorOf(
      await stream.ask({
        messageRequest: {
          case: "fileContainingExtension",
          value: { containingType: "switchboard.user.v1.User", extensionNumber: 100 },
        },
      }),
    );
    expect(unknownExt.errorCode).toBe(Code.NotFound);
    await stream.close();
  });

  describe("with extensions", () => {
    // Generated Switchboard code declares no extensions, so build two proto2
    // files by hand: base.proto declares Base and extension 100, more.proto
    // adds 120 at top level and 150 nested in Holder, and serves Probe.
    const optional = FieldDescriptorProto_Label.OPTIONAL;
    const base = create(FileDescriptorProtoSchema, {
      name: "reflection_test/base.proto",
      package: "reflectiontest",
      syntax: "proto2",
      messageType: [{ name: "Base", extensionRange: [{ start: 100, end: 200 }] }],
      extension: [
        {
          name: "note",
          number: 100,
          label: optional,
          type: FieldDescriptorProto_Type.STRING,
          extendee: ".reflectiontest.Base",
        },
      ],
    });
    const more = create(FileDescriptorProtoSchema, {
      name: "reflection_test/more.proto",
      package: "reflectiontest",
      syntax: "proto2",
      dependency: ["reflection_test/base.proto"],
      messageType: [
        {
          name: "Holder",
          extension: [
            {
              name: "count",
              number: 150,
              label: optional,
              type: FieldDescriptorProto_Type.INT32,
              extendee: ".reflectiontest.Base",
            },
          ],
        },
      ],
      extension: [
        {
          name: "tag",
          number: 120,
          label: optional,
          type: FieldDescriptorProto_Type.STRING,
          extendee: ".reflectiontest.Base",
        },
      ],
      service: [
        {
          name: "Probe",
          method: [
            { name: "Ping", inputType: ".reflectiontest.Base", outputType: ".reflectiontest.Base" },
          ],
        },
      ],
    });
    const probe = createFileRegistry(
      create(FileDescriptorSetSchema, { file: [base, more] }),
    ).getService("reflectiontest.Probe")!;
    const extTransport = createRouterTransport((router) => registerReflection(router, [probe]));

    it("lists every extension number of a message, sorted", async () => {
      const res = await askOnce(extTransport, {
        messageRequest: { case: "allExtensionNumbersOfType", value: "reflectiontest.Base" },
      });
      expect(res.messageResponse.case).toBe("allExtensionNumbersResponse");
      expect(
        res.messageResponse.case === "allExtensionNumbersResponse" && res.messageResponse.value,
      ).toMatchObject({ baseTypeName: "reflectiontest.Base", extensionNumber: [100, 120, 150] });
    });

    it("answers file_containing_extension with the declaring file first", async () => {
      const nested = fileNames(
        await askOnce(extTransport, {
          messageRequest: {
            case: "fileContainingExtension",
            value: { containingType: "reflectiontest.Base", extensionNumber: 150 },
          },
        }),
      );
      expect(nested).toEqual(["reflection_test/more.proto", "reflection_test/base.proto"]);
      const top = fileNames(
        await askOnce(extTransport, {
          messageRequest: {
            case: "fileContainingExtension",
            value: { containingType: "reflectiontest.Base", extensionNumber: 100 },
          },
        }),
      );
      expect(top).toEqual(["reflection_test/base.proto"]);
      const missing = errorOf(
        await askOnce(extTransport, {
          messageRequest: {
            case: "fileContainingExtension",
            value: { containingType: "reflectiontest.Base", extensionNumber: 101 },
          },
        }),
      );
      expect(missing.errorCode).toBe(Code.NotFound);
    });

    it("resolves extensions by their full name", async () => {
      const names = fileNames(
        await askOnce(extTransport, {
          messageRequest: { case: "fileContainingSymbol", value: "reflectiontest.Holder.count" },
        }),
      );
      expect(names[0]).toBe("reflection_test/more.proto");
    });
  });
});

const execFileAsync = promisify(execFile);
const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const BUF = join(REPO_ROOT, "node_modules", ".bin", "buf");

describe("ServerReflection with real clients over h2c", () => {
  let server: Http2Server;
  let baseUrl: string;
  let address: string;
  const sessions = new Set<ServerHttp2Session>();
  /** Which reflection service each call reached, to tell v1 from v1alpha. */
  const reached: string[] = [];
  const record: Interceptor = (next) => async (req) => {
    reached.push(req.service.typeName);
    return next(req);
  };

  beforeAll(async () => {
    server = createServer(
      connectNodeAdapter({
        interceptors: [record],
        routes: (router) => {
          router.service(UserService, {
            getUser: (req) => ({
              user: { id: req.id, username: "ada", createTime: { seconds: 1_700_000_000n } },
            }),
          });
          registerReflection(router, [UserService]);
        },
      }),
    );
    server.on("session", (session) => {
      sessions.add(session);
      session.on("close", () => sessions.delete(session));
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    address = `127.0.0.1:${port}`;
    baseUrl = `http://${address}`;
  });

  afterAll(async () => {
    for (const session of sessions) session.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const buf = (...args: string[]) =>
    execFileAsync(BUF, ["curl", "--http2-prior-knowledge", ...args], { timeout: 20_000 });

  const userMethods = [
    "switchboard.user.v1.UserService/CreateUsers",
    "switchboard.user.v1.UserService/GetUser",
    "switchboard.user.v1.UserService/GetUserStream",
    "switchboard.user.v1.UserService/RegisterUser",
    "switchboard.user.v1.UserService/WatchUsers",
  ];

  it("lets buf curl list methods through grpc.reflection.v1", async () => {
    reached.length = 0;
    const { stdout } = await buf("--list-methods", baseUrl);
    const lines = stdout.trim().split("\n");
    expect(lines).toEqual(expect.arrayContaining(userMethods));
    expect(lines).toContain("grpc.reflection.v1.ServerReflection/ServerReflectionInfo");
    expect(lines).toContain("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");
    expect(reached).toContain("grpc.reflection.v1.ServerReflection");
  });

  it("lets buf curl list methods through grpc.reflection.v1alpha over the gRPC protocol", async () => {
    reached.length = 0;
    const { stdout } = await buf(
      "--protocol",
      "grpc",
      "--reflect-protocol",
      "grpc-v1alpha",
      "--list-methods",
      baseUrl,
    );
    expect(stdout.trim().split("\n")).toEqual(expect.arrayContaining(userMethods));
    expect(reached).toContain("grpc.reflection.v1alpha.ServerReflection");
    expect(reached).not.toContain("grpc.reflection.v1.ServerReflection");
  });

  it("lets buf curl call GetUser with only the reflected schema", async () => {
    const { stdout } = await buf(
      "--protocol",
      "grpc",
      "-d",
      '{"id":"u1"}',
      `${baseUrl}/switchboard.user.v1.UserService/GetUser`,
    );
    // The Timestamp's JSON form proves its imported descriptor arrived too.
    expect(JSON.parse(stdout)).toEqual({
      user: { id: "u1", username: "ada", createTime: "2023-11-14T22:13:20Z" },
    });
  });
});
