import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  RetryInfoSchema,
} from "../../gen/google/rpc/error_details_pb.js";
import {
  AuthRequiredError,
  describeError,
  ExitCode,
  exitCodeForCode,
  formatErrorReport,
  isRetryable,
  UsageError,
} from "./errors.js";
import { resolveEndpoint } from "./transport.js";

describe("exit codes", () => {
  it("maps each class of RPC error to its code", () => {
    const cases: Array<[Code, number]> = [
      [Code.Unauthenticated, ExitCode.auth],
      [Code.PermissionDenied, ExitCode.auth],
      [Code.NotFound, ExitCode.notFound],
      [Code.InvalidArgument, ExitCode.invalid],
      [Code.AlreadyExists, ExitCode.invalid],
      [Code.Unavailable, ExitCode.unavailable],
      [Code.DeadlineExceeded, ExitCode.unavailable],
      [Code.Internal, ExitCode.other],
      [Code.Canceled, ExitCode.other],
    ];
    for (const [code, exit] of cases) {
      expect(describeError(new ConnectError("x", code)).exitCode, Code[code]).toBe(exit);
      expect(exitCodeForCode(code)).toBe(exit);
    }
    expect(describeError(new UsageError("bad")).exitCode).toBe(ExitCode.usage);
    expect(describeError(new AuthRequiredError("log in again")).exitCode).toBe(ExitCode.auth);
    // What an interceptor throws arrives wrapped in a ConnectError.
    const wrapped = new ConnectError(
      "wrapped",
      Code.Unknown,
      undefined,
      undefined,
      new AuthRequiredError("log in again"),
    );
    expect(describeError(wrapped)).toMatchObject({ exitCode: 3, message: "log in again" });
  });

  it("prints every detail: field violations, reason, retry delay, request id", () => {
    const error = new ConnectError(
      "bad fields",
      Code.InvalidArgument,
      new Headers({ "x-request-id": "req-1" }),
      [
        {
          desc: BadRequestSchema,
          value: { fieldViolations: [{ field: "email", description: "is invalid" }] },
        },
        { desc: ErrorInfoSchema, value: { reason: "SOMETHING", domain: "switchboard.dev" } },
        { desc: RetryInfoSchema, value: { retryDelay: { seconds: 3n } } },
      ],
    );
    const report = describeError(error);
    expect(report).toMatchObject({
      code: "invalid_argument",
      exitCode: 5,
      fieldViolations: { email: ["is invalid"] },
      reason: "SOMETHING",
      retryDelayMs: 3000,
      requestId: "req-1",
    });
    expect(formatErrorReport(report)).toEqual([
      "error: invalid_argument: bad fields — retry in 3 s",
      "  email: is invalid",
      "  reason: SOMETHING",
      "  request id: req-1",
    ]);
  });

  it("says that an untrusted certificate needs --ca (exit 6)", () => {
    const tls = Object.assign(new Error("self-signed certificate in certificate chain"), {
      code: "SELF_SIGNED_CERT_IN_CHAIN",
    });
    const report = describeError(new ConnectError("x", Code.Internal, undefined, undefined, tls));
    expect(report.exitCode).toBe(6);
    expect(report.message).toMatch(/certificate is not trusted/);
    expect(report.hint).toMatch(/--ca/);
    expect(isRetryable(new ConnectError("x", Code.Internal, undefined, undefined, tls))).toBe(
      false,
    );
  });

  it("retries streams only on transport trouble", () => {
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    expect(isRetryable(new ConnectError("x", Code.Unavailable))).toBe(true);
    expect(isRetryable(new ConnectError("x", Code.Internal, undefined, undefined, reset))).toBe(
      true,
    );
    expect(isRetryable(new ConnectError("x", Code.Internal))).toBe(false);
    expect(isRetryable(new ConnectError("x", Code.Unauthenticated))).toBe(false);
  });
});

describe("resolveEndpoint", () => {
  it("adds a scheme, turns TLS on with --tls/--ca/--insecure, keys by origin", () => {
    expect(resolveEndpoint({ addr: "localhost:8080" })).toMatchObject({
      baseUrl: "http://localhost:8080",
      key: "http://localhost:8080",
      tls: false,
    });
    expect(resolveEndpoint({ addr: "localhost:8443", tls: true })).toMatchObject({
      baseUrl: "https://localhost:8443",
      tls: true,
    });
    expect(resolveEndpoint({ addr: "http://h:1", insecure: true })).toMatchObject({
      key: "https://h:1",
      insecure: true,
    });
    expect(() => resolveEndpoint({ addr: "ftp://x" })).toThrow(UsageError);
    expect(() => resolveEndpoint({ addr: "h:1", ca: "/no/such/file" })).toThrow(UsageError);
  });
});
