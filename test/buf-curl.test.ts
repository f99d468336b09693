import { type ChildProcess, execFile, spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { ADMIN_USERNAME, registerAndLogin } from "./support/auth.js";
import { ROOT, startTestServer, type TestServer } from "./support/server.js";

/**
 * `buf curl` (connect-go inside) as an independent client of every protocol
 * the one port speaks. The schema always comes from the server's reflection
 * service, never from the local .proto files.
 *
 * Note: `buf curl` talks HTTP/2 whenever it uses server reflection on an
 * http:// URL ("server reflection does not work with HTTP 1.1 since the
 * protocol relies on bidirectional streaming", `buf curl --help`), even
 * without --http2-prior-knowledge. HTTP/1.1 is therefore covered separately,
 * with a descriptor set that buf curl itself downloads from the reflection
 * service first.
 */

const BUF = join(ROOT, "node_modules", ".bin", "buf");
const SERVICE = "switchboard.user.v1.UserService";
const PASSWORD = "correct horse battery";

interface Protocol {
  readonly name: string;
  readonly flags: readonly string[];
  /** Content-Type buf curl sends for a unary call. */
  readonly unaryContentType: string;
}

const CONNECT: Protocol = {
  name: "Connect",
  flags: ["--protocol", "connect"],
  unaryContentType: "application/proto",
};
const GRPC_WEB: Protocol = {
  name: "gRPC-Web",
  flags: ["--protocol", "grpcweb"],
  unaryContentType: "application/grpc-web+proto",
};
const GRPC: Protocol = {
  name: "gRPC",
  flags: ["--protocol", "grpc", "--http2-prior-knowledge"],
  unaryContentType: "application/grpc",
};
const PROTOCOLS = [CONNECT, GRPC_WEB, GRPC];

/** google.rpc.Code numbers buf curl uses in exit codes (code << 3). */
const INVALID_ARGUMENT = 3;
const NOT_FOUND = 5;
const ALREADY_EXISTS = 6;

interface JsonUser {
  id: string;
  username: string;
  email: string;
  displayName?: string;
  createTime: string;
}

interface CurlResult {
  /** Exit code: 0 on success, the RPC code << 3 when the call failed. */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * `-H authorization: Bearer …` for every buf curl call: the suite logs in as
 * the harness's admin (CreateUsers needs the role); public methods ignore it.
 */
let authArgs: string[] = [];
let adminId = "";

/** Runs `buf curl ARGS` (no shell), feeding `stdin`; rejects only if it times out. */
function bufCurl(
  args: readonly string[],
  options: { stdin?: string; timeoutMs?: number } = {},
): Promise<CurlResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      BUF,
      ["curl", ...authArgs, ...args],
      { timeout: options.timeoutMs ?? 15_000, maxBuffer: 16 * 1024 * 1024, cwd: ROOT },
      (error, stdout, stderr) => {
        if (error?.killed) {
          reject(new Error(`buf curl ${args.join(" ")} timed out\n${stderr}`));
          return;
        }
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(options.stdin ?? "");
  });
}

/**
 * Splits text holding JSON values one after another (how buf curl prints
 * stream messages) into the complete values and the unfinished rest.
 */
function splitJson(text: string): { values: unknown[]; rest: string } {
  const values: unknown[] = [];
  let depth = 0;
  let inString = false;
  let escaped = false;
  let start = -1;
  let consumed = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      if (escaped) escaped = false;
      else if (c === "\\") escaped = true;
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    } else if (c === "{" || c === "[") {
      if (depth === 0) start = i;
      depth++;
    } else if (c === "}" || c === "]") {
      depth--;
      if (depth === 0) {
        values.push(JSON.parse(text.slice(start, i + 1)));
        consumed = i + 1;
      }
    }
  }
  return { values, rest: text.slice(consumed) };
}

function parseAll(text: string): unknown[] {
  const { values, rest } = splitJson(text);
  expect(rest.trim(), "unparsed buf curl output").toBe("");
  return values;
}

function parseOne<T>(text: string): T {
  const values = parseAll(text);
  expect(values).toHaveLength(1);
  return values[0] as T;
}

/** What `buf curl -v` printed about the call to `path` (reflection calls are separate). */
function exchange(stderr: string, path: string) {
  const lines = stderr.split("\n");
  const post = lines
    .map((line) => /^buf: > \(#(\d+)\) POST (\S+)$/.exec(line))
    .find((m) => m?.[2] === path);
  if (!post) throw new Error(`no "POST ${path}" in buf curl -v output:\n${stderr}`);
  const id = post[1];
  const requestHeaders = new Map<string, string>();
  let httpVersion: string | undefined;
  let status: number | undefined;
  for (const line of lines) {
    const header = new RegExp(`^buf: > \\(#${id}\\) ([^:]+): (.*)$`).exec(line);
    if (header) requestHeaders.set(header[1]!.toLowerCase(), header[2]!);
    const statusLine = new RegExp(`^buf: < \\(#${id}\\) (HTTP/[\\d.]+) (\\d+)`).exec(line);
    if (statusLine && httpVersion === undefined) {
      httpVersion = statusLine[1];
      status = Number(statusLine[2]);
    }
  }
  return { httpVersion, status, requestHeaders };
}

function expectRecentTimestamp(value: string | undefined) {
  expect(value).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  const age = Date.now() - Date.parse(value!);
  expect(age).toBeGreaterThanOrEqual(-5_000);
  expect(age).toBeLessThan(5 * 60_000);
}

interface BufError {
  code: string;
  message: string;
  details?: Array<{ type: string; value: string; debug?: unknown }>;
}

/** The base64 `value` of the first error detail of `type`. */
function detailBytes(error: BufError, type: string): Uint8Array {
  const detail = error.details?.find((d) => d.type === type);
  if (!detail) throw new Error(`no ${type} detail in ${JSON.stringify(error)}`);
  return new Uint8Array(Buffer.from(detail.value, "base64"));
}

interface WatchItem {
  user: JsonUser;
  cursor: string;
}

/**
 * `buf curl` on WatchUsers as a long-running child: stdout is parsed as it
 * arrives; every wait is bounded; `stop()` kills the process.
 */
function watchUsers(url: string, request: Record<string, string>) {
  const child: ChildProcess = spawn(
    BUF,
    [
      "curl",
      ...authArgs,
      ...GRPC.flags,
      "-d",
      JSON.stringify(request),
      `${url}/${SERVICE}/WatchUsers`,
    ],
    { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"], timeout: 25_000 },
  );
  const items: WatchItem[] = [];
  const events = new EventEmitter();
  let pending = "";
  let stderr = "";
  let exit: string | undefined;
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (chunk: string) => {
    const { values, rest } = splitJson(pending + chunk);
    pending = rest;
    items.push(...(values as WatchItem[]));
    events.emit("change");
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (chunk: string) => {
    stderr += chunk;
  });
  child.once("exit", (code, signal) => {
    exit = String(code ?? signal);
    events.emit("change");
  });

  return {
    items,
    /** Resolves with the items once there are at least `count`. */
    waitFor(count: number, timeoutMs = 10_000): Promise<WatchItem[]> {
      return new Promise((resolve, reject) => {
        const check = () => {
          if (items.length >= count) {
            done();
            resolve([...items]);
          } else if (exit !== undefined) {
            done();
            reject(new Error(`buf curl exited (${exit}) after ${items.length} items:\n${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`waited ${timeoutMs} ms for ${count} items, got ${items.length}`));
        }, timeoutMs);
        const done = () => {
          clearTimeout(timer);
          events.off("change", check);
        };
        events.on("change", check);
        check();
      });
    },
    /** Kills buf curl and waits (bounded) for it to exit. */
    async stop(): Promise<void> {
      if (exit !== undefined) return;
      const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 3_000);
      await exited;
      clearTimeout(timer);
    },
    get stillRunning() {
      return exit === undefined;
    },
  };
}

describe("buf curl (schema from server reflection) against one port", () => {
  let server: TestServer;
  /** Every user the tests created, in creation order (tests run one at a time). */
  const created: JsonUser[] = [];

  const rpc = (method: string) => `${server.url}/${SERVICE}/${method}`;

  async function register(
    protocol: Protocol,
    body: Record<string, string>,
    extraFlags: readonly string[] = [],
  ): Promise<CurlResult> {
    const result = await bufCurl([
      ...protocol.flags,
      ...extraFlags,
      "-d",
      JSON.stringify(body),
      rpc("RegisterUser"),
    ]);
    if (result.code === 0) created.push(parseOne<{ user: JsonUser }>(result.stdout).user);
    return result;
  }

  beforeAll(async () => {
    server = await startTestServer();
    const admin = await registerAndLogin(server.url, { username: ADMIN_USERNAME });
    authArgs = ["-H", `authorization: Bearer ${admin.accessToken}`];
    adminId = admin.userId;
  });

  afterAll(async () => {
    await server?.close();
  });

  it("lists every service through reflection", async () => {
    const { code, stdout, stderr } = await bufCurl(["--list-methods", server.url]);
    expect(code, stderr).toBe(0);
    const methods = stdout.trim().split("\n");
    for (const method of [
      "RegisterUser",
      "GetUser",
      "GetUserStream",
      "CreateUsers",
      "WatchUsers",
    ]) {
      expect(methods).toContain(`${SERVICE}/${method}`);
    }
    expect(methods).toContain("grpc.health.v1.Health/Check");
  });

  it.each(PROTOCOLS)(
    "registers, gets and streams users over $name via reflection (HTTP/2, since reflection needs it)",
    async (protocol) => {
      const prefix = protocol.name.toLowerCase().replace(/[^a-z]/g, "");
      const first = await register(
        protocol,
        {
          username: `${prefix}-first`,
          email: `${prefix}.first@example.com`,
          password: PASSWORD,
          display_name: `First ${protocol.name}`,
        },
        ["-v"],
      );
      expect(first.code, first.stderr).toBe(0);
      const firstUser = parseOne<{ user: JsonUser }>(first.stdout).user;
      expect(firstUser).toMatchObject({
        username: `${prefix}-first`,
        email: `${prefix}.first@example.com`,
        displayName: `First ${protocol.name}`,
      });
      expect(firstUser.id).toMatch(/\S/);
      expectRecentTimestamp(firstUser.createTime);

      // What actually went over the wire for the RPC (not the reflection call).
      expect(first.stderr).toContain(`Using server reflection to resolve "${SERVICE}"`);
      const wire = exchange(first.stderr, `/${SERVICE}/RegisterUser`);
      expect(wire.httpVersion).toBe("HTTP/2.0");
      expect(wire.status).toBe(200);
      expect(wire.requestHeaders.get("content-type")).toBe(protocol.unaryContentType);

      const second = await register(protocol, {
        username: `${prefix}-second`,
        email: `${prefix}.second@example.com`,
        password: PASSWORD,
      });
      expect(second.code, second.stderr).toBe(0);
      const secondUser = parseOne<{ user: JsonUser }>(second.stdout).user;
      expect(secondUser.id).not.toBe(firstUser.id);

      const got = await bufCurl([
        ...protocol.flags,
        "-d",
        JSON.stringify({ id: firstUser.id }),
        rpc("GetUser"),
      ]);
      expect(got.code, got.stderr).toBe(0);
      expect(parseOne<{ user: JsonUser }>(got.stdout).user).toEqual(firstUser);

      const missing = await bufCurl([
        ...protocol.flags,
        "-d",
        JSON.stringify({ id: "no-such-user" }),
        rpc("GetUser"),
      ]);
      expect(missing.code).toBe(NOT_FOUND << 3);
      expect(parseOne<BufError>(missing.stderr).code).toBe("not_found");

      // Request order, not creation order; the unknown id does not end the stream.
      const ids = [secondUser.id, "no-such-user", firstUser.id];
      const streamed = await bufCurl([
        ...protocol.flags,
        "-d",
        JSON.stringify({ ids }),
        rpc("GetUserStream"),
      ]);
      expect(streamed.code, streamed.stderr).toBe(0);
      const items = parseAll(streamed.stdout) as Array<{
        id: string;
        user?: JsonUser;
        error?: { code?: number; message?: string };
      }>;
      expect(items.map((item) => item.id)).toEqual(ids);
      expect(items[0]!.user).toEqual(secondUser);
      expect(items[1]!.user).toBeUndefined();
      expect(items[1]!.error?.code).toBe(NOT_FOUND);
      expect(items[1]!.error?.message).toContain("no-such-user");
      expect(items[2]!.user).toEqual(firstUser);
    },
  );

  it("serves Connect and gRPC-Web over HTTP/1.1 on the same port (descriptors downloaded via reflection)", async () => {
    // buf curl fetches the descriptors from the server's reflection service...
    const reflection = await bufCurl([
      ...GRPC.flags,
      "-d",
      JSON.stringify({ file_containing_symbol: SERVICE }),
      `${server.url}/grpc.reflection.v1.ServerReflection/ServerReflectionInfo`,
    ]);
    expect(reflection.code, reflection.stderr).toBe(0);
    const answer = parseOne<{ fileDescriptorResponse: { fileDescriptorProto: string[] } }>(
      reflection.stdout,
    );
    const files = answer.fileDescriptorResponse.fileDescriptorProto.map((b64) =>
      fromBinary(FileDescriptorProtoSchema, Buffer.from(b64, "base64")),
    );
    const byName = new Map(files.map((file) => [file.name, file]));
    const ordered: FileDescriptorProto[] = [];
    const visit = (file: FileDescriptorProto) => {
      if (ordered.includes(file)) return;
      for (const dep of file.dependency) {
        const found = byName.get(dep);
        expect(found, `reflection left out ${dep}`).toBeDefined();
        visit(found!);
      }
      ordered.push(file);
    };
    for (const file of files) visit(file);
    const dir = await mkdtemp(join(tmpdir(), "switchboard-buf-"));
    try {
      const schema = join(dir, "reflected.binpb");
      await writeFile(
        schema,
        toBinary(FileDescriptorSetSchema, create(FileDescriptorSetSchema, { file: ordered })),
      );

      // ...and, with that schema, needs no HTTP/2 for Connect and gRPC-Web.
      for (const protocol of [CONNECT, GRPC_WEB]) {
        const prefix = `h1-${protocol.name.toLowerCase().replace(/[^a-z]/g, "")}`;
        const flags = [...protocol.flags, "--schema", schema, "-v"];
        const reg = await register(
          protocol,
          { username: prefix, email: `${prefix}@example.com`, password: PASSWORD },
          ["--schema", schema, "-v"],
        );
        expect(reg.code, reg.stderr).toBe(0);
        expect(reg.stderr).not.toContain("HTTP/2 prior knowledge");
        const regWire = exchange(reg.stderr, `/${SERVICE}/RegisterUser`);
        expect(regWire.httpVersion).toBe("HTTP/1.1");
        expect(regWire.requestHeaders.get("content-type")).toBe(protocol.unaryContentType);
        const user = parseOne<{ user: JsonUser }>(reg.stdout).user;
        expect(user.username).toBe(prefix);
        expectRecentTimestamp(user.createTime);

        const got = await bufCurl([
          ...flags,
          "-d",
          JSON.stringify({ id: user.id }),
          rpc("GetUser"),
        ]);
        expect(got.code, got.stderr).toBe(0);
        expect(exchange(got.stderr, `/${SERVICE}/GetUser`).httpVersion).toBe("HTTP/1.1");
        expect(parseOne<{ user: JsonUser }>(got.stdout).user).toEqual(user);

        const ids = ["no-such-user", user.id];
        const streamed = await bufCurl([
          ...flags,
          "-d",
          JSON.stringify({ ids }),
          rpc("GetUserStream"),
        ]);
        expect(streamed.code, streamed.stderr).toBe(0);
        expect(exchange(streamed.stderr, `/${SERVICE}/GetUserStream`).httpVersion).toBe("HTTP/1.1");
        const items = parseAll(streamed.stdout) as Array<{
          id: string;
          user?: JsonUser;
          error?: { code?: number };
        }>;
        expect(items.map((item) => item.id)).toEqual(ids);
        expect(items[0]!.error?.code).toBe(NOT_FOUND);
        expect(items[1]!.user).toEqual(user);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it.each(PROTOCOLS)(
    "rejects an invalid registration over $name with a BadRequest naming every bad field",
    async (protocol) => {
      const result = await bufCurl([
        ...protocol.flags,
        "-d",
        JSON.stringify({
          username: "x",
          email: "not-an-email",
          password: "short",
          display_name: "bell\u0007",
        }),
        rpc("RegisterUser"),
      ]);
      expect(result.code).toBe(INVALID_ARGUMENT << 3);
      expect(result.stdout).toBe("");
      const error = parseOne<BufError>(result.stderr);
      expect(error.code).toBe("invalid_argument");
      const badRequest = fromBinary(BadRequestSchema, detailBytes(error, "google.rpc.BadRequest"));
      const fields = badRequest.fieldViolations.map((v) => v.field);
      expect(fields.sort()).toEqual(["display_name", "email", "password", "username"]);
      for (const violation of badRequest.fieldViolations) {
        expect(violation.description).toMatch(/\S/);
        expect(error.message).toContain(violation.field);
      }
    },
  );

  it("rejects a username taken in another case with ErrorInfo USERNAME_TAKEN", async () => {
    const first = await register(CONNECT, {
      username: "taken.name",
      email: "taken@example.com",
      password: PASSWORD,
    });
    expect(first.code, first.stderr).toBe(0);

    const again = await bufCurl([
      ...CONNECT.flags,
      "-d",
      JSON.stringify({ username: "Taken.Name", email: "other@example.com", password: PASSWORD }),
      rpc("RegisterUser"),
    ]);
    expect(again.code).toBe(ALREADY_EXISTS << 3);
    const error = parseOne<BufError>(again.stderr);
    expect(error.code).toBe("already_exists");
    const info = fromBinary(ErrorInfoSchema, detailBytes(error, "google.rpc.ErrorInfo"));
    expect(info.reason).toBe("USERNAME_TAKEN");
    expect(info.domain).toBe("switchboard.dev");
  });

  it("imports a client stream over gRPC, reporting invalid items and in-stream duplicates", async () => {
    const requests = [
      { username: "bulk-ann", email: "bulk.ann@example.com", password: PASSWORD },
      { username: "bulk-ben", email: "bulk.ben@example.com", password: PASSWORD },
      { username: "b", email: "nope", password: PASSWORD },
      { username: "BULK-ANN", email: "bulk.ann2@example.com", password: PASSWORD },
      { username: "bulk-cat", email: "BULK.BEN@example.com", password: PASSWORD },
      { username: "bulk-dan", email: "bulk.dan@example.com", password: "tiny" },
      { username: "bulk-eve", email: "bulk.eve@example.com", password: PASSWORD },
    ];
    const result = await bufCurl([...GRPC.flags, "-d", "@-", rpc("CreateUsers")], {
      stdin: `${requests.map((r) => JSON.stringify(r)).join("\n")}\n`,
    });
    expect(result.code, result.stderr).toBe(0);
    const summary = parseOne<{
      createdCount: number;
      failedCount: number;
      failures: Array<{ index?: number; username: string; code: string; message: string }>;
      users: JsonUser[];
    }>(result.stdout);
    created.push(...summary.users);

    expect(summary.createdCount).toBe(3);
    expect(summary.failedCount).toBe(4);
    expect(
      summary.failures.map((f) => ({ index: f.index ?? 0, username: f.username, code: f.code })),
    ).toEqual([
      { index: 2, username: "b", code: "INVALID_ARGUMENT" },
      { index: 3, username: "BULK-ANN", code: "ALREADY_EXISTS" },
      { index: 4, username: "bulk-cat", code: "ALREADY_EXISTS" },
      { index: 5, username: "bulk-dan", code: "INVALID_ARGUMENT" },
    ]);
    expect(summary.failures[0]!.message).toMatch(/username/);
    expect(summary.failures[0]!.message).toMatch(/email/);
    expect(summary.failures[3]!.message).toMatch(/password/);
    expect(summary.users.map((u) => u.username)).toEqual(["bulk-ann", "bulk-ben", "bulk-eve"]);
    expect(summary.users.map((u) => u.email)).toEqual([
      "bulk.ann@example.com",
      "bulk.ben@example.com",
      "bulk.eve@example.com",
    ]);
    for (const user of summary.users) expectRecentTimestamp(user.createTime);
    expect(new Set(summary.users.map((u) => u.id)).size).toBe(3);
  });

  it("watches existing users in creation order over gRPC, then a live one, and resumes after a cursor", {
    timeout: 25_000,
  }, async () => {
    // Make sure there is history to resume into, whatever ran before.
    for (let i = created.length; i < 3; i++) {
      const r = await register(CONNECT, {
        username: `watch-seed-${i}`,
        email: `watch.seed.${i}@example.com`,
        password: PASSWORD,
      });
      expect(r.code, r.stderr).toBe(0);
    }
    // The admin this suite logs in as registered first.
    const existing = [adminId, ...created.map((u) => u.id)];

    const watch = watchUsers(server.url, {});
    let history: WatchItem[] = [];
    try {
      history = await watch.waitFor(existing.length);
      expect(history.map((item) => item.user.id)).toEqual(existing);
      for (const item of history) expect(item.cursor).toMatch(/\S/);
      expect(new Set(history.map((item) => item.cursor)).size).toBe(history.length);

      const live = await register(GRPC, {
        username: "watch-live",
        email: "watch.live@example.com",
        password: PASSWORD,
      });
      expect(live.code, live.stderr).toBe(0);
      const liveUser = parseOne<{ user: JsonUser }>(live.stdout).user;
      const after = await watch.waitFor(existing.length + 1);
      expect(after).toHaveLength(existing.length + 1);
      expect(after.at(-1)!.user).toEqual(liveUser);
      expect(watch.stillRunning).toBe(true);
    } finally {
      await watch.stop();
    }

    const resumed = watchUsers(server.url, { after_cursor: history[1]!.cursor });
    try {
      const expected = [adminId, ...created.map((u) => u.id)].slice(2);
      const items = await resumed.waitFor(expected.length);
      expect(items[0]!.user.id).toBe(history[2]!.user.id);
      expect(items.map((item) => item.user.id)).toEqual(expected);
      expect(items[0]!.cursor).toBe(history[2]!.cursor);
    } finally {
      await resumed.stop();
    }
  });

  it("reports the server and UserService SERVING through grpc.health.v1.Health/Check", async () => {
    for (const body of [{}, { service: SERVICE }]) {
      const result = await bufCurl([
        ...GRPC.flags,
        "-d",
        JSON.stringify(body),
        `${server.url}/grpc.health.v1.Health/Check`,
      ]);
      expect(result.code, result.stderr).toBe(0);
      expect(parseOne<{ status: string }>(result.stdout)).toEqual({ status: "SERVING" });
    }
  });
});
