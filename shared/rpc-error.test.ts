import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  BadRequest_FieldViolationSchema,
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailure_ViolationSchema,
  QuotaFailureSchema,
  RequestInfoSchema,
  RetryInfoSchema,
} from "../gen/google/rpc/error_details_pb.js";
import { codeName, shouldRefresh, summarize, toRpcError } from "./rpc-error.js";

describe("toRpcError", () => {
  it("groups BadRequest field violations by field", () => {
    const err = new ConnectError("bad", Code.InvalidArgument, undefined, [
      {
        desc: BadRequestSchema,
        value: create(BadRequestSchema, {
          fieldViolations: [
            create(BadRequest_FieldViolationSchema, {
              field: "username",
              description: "too short",
            }),
            create(BadRequest_FieldViolationSchema, {
              field: "username",
              description: "bad chars",
            }),
            create(BadRequest_FieldViolationSchema, { field: "email", description: "invalid" }),
          ],
        }),
      },
    ]);
    const e = toRpcError(err);
    expect(e.kind).toBe("invalid");
    expect(e.codeName).toBe("invalid_argument");
    expect(e.message).toBe("bad");
    expect(e.fieldViolations).toEqual({ username: ["too short", "bad chars"], email: ["invalid"] });
  });

  it("reads the retry delay and quota subject of a rate limit", () => {
    const err = new ConnectError("slow down", Code.ResourceExhausted, undefined, [
      {
        desc: RetryInfoSchema,
        value: create(RetryInfoSchema, { retryDelay: durationFromMs(2500) }),
      },
      {
        desc: QuotaFailureSchema,
        value: create(QuotaFailureSchema, {
          violations: [
            create(QuotaFailure_ViolationSchema, { subject: "ip:1.2.3.4", description: "10/min" }),
          ],
        }),
      },
    ]);
    const e = toRpcError(err);
    expect(e.kind).toBe("rate_limited");
    expect(e.retryDelayMs).toBe(2500);
    expect(e.quotaViolations).toEqual([{ subject: "ip:1.2.3.4", description: "10/min" }]);
    expect(summarize(e)).toBe("resource_exhausted: slow down — retry in 3 s");
  });

  it("tells a client to refresh only on TOKEN_EXPIRED", () => {
    const expired = new ConnectError("expired", Code.Unauthenticated, undefined, [
      {
        desc: ErrorInfoSchema,
        value: create(ErrorInfoSchema, { reason: "TOKEN_EXPIRED", domain: "d" }),
      },
    ]);
    const invalid = new ConnectError("invalid", Code.Unauthenticated, undefined, [
      {
        desc: ErrorInfoSchema,
        value: create(ErrorInfoSchema, { reason: "TOKEN_INVALID", domain: "d" }),
      },
    ]);
    expect(shouldRefresh(toRpcError(expired))).toBe(true);
    expect(shouldRefresh(toRpcError(invalid))).toBe(false);
    expect(toRpcError(invalid).reason).toBe("TOKEN_INVALID");
  });

  it("finds the request id in RequestInfo or in the error metadata", () => {
    const withInfo = new ConnectError("internal error", Code.Internal, undefined, [
      { desc: RequestInfoSchema, value: create(RequestInfoSchema, { requestId: "req-1" }) },
    ]);
    expect(toRpcError(withInfo).requestId).toBe("req-1");
    expect(summarize(toRpcError(withInfo))).toBe("internal: internal error — request id req-1");
    const withHeader = new ConnectError(
      "x",
      Code.Internal,
      new Headers({ "x-request-id": "req-2" }),
    );
    expect(toRpcError(withHeader).requestId).toBe("req-2");
  });

  it("treats a plain network failure as unavailable and a non-ConnectError as internal", () => {
    expect(toRpcError(new ConnectError("fetch failed", Code.Unavailable)).kind).toBe("unavailable");
    expect(toRpcError(new TypeError("boom")).kind).toBe("internal");
  });

  it("writes code names as the Connect protocol does", () => {
    expect(codeName(Code.AlreadyExists)).toBe("already_exists");
    expect(codeName(Code.DeadlineExceeded)).toBe("deadline_exceeded");
    expect(codeName(Code.Unauthenticated)).toBe("unauthenticated");
  });
});
