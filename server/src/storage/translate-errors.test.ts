import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { ErrorInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import { Reason } from "../errors.js";
import { translatePostgresError } from "./postgres-store.js";
import { translateSqliteError } from "./sqlite-store.js";

/**
 * Driver failures the contract suite cannot provoke on demand (server
 * shutdown, exhausted connections, lost sockets), fed to each adapter's
 * translator as the drivers shape them.
 */

function driverError(message: string, props: Record<string, unknown>): Error {
  return Object.assign(new Error(message), props);
}

describe("translatePostgresError", () => {
  it.each([
    ["too many clients", driverError("sorry, too many clients already", { code: "53300" })],
    [
      "admin shutdown",
      driverError("terminating connection due to administrator command", { code: "57P01" }),
    ],
    ["starting up", driverError("the database system is starting up", { code: "57P03" })],
    ["connection exception class", driverError("connection failure", { code: "08006" })],
    ["terminated socket", new Error("Connection terminated unexpectedly")],
    ["connect timeout", new Error("timeout exceeded when trying to connect")],
    ["refused", driverError("connect ECONNREFUSED 127.0.0.1:5432", { code: "ECONNREFUSED" })],
    [
      "refused on every address",
      new AggregateError([
        driverError("x", { code: "ECONNREFUSED" }),
        driverError("y", { code: "ECONNREFUSED" }),
      ]),
    ],
  ])("maps %s to Unavailable, keeping the driver error only as cause", (_, error) => {
    const translated = translatePostgresError(error);
    expect(translated.code).toBe(Code.Unavailable);
    expect(translated.cause).toBe(error);
    expect(translated.rawMessage).toBe("database is unavailable");
  });

  it("maps unique violations to the reason of the clashing index", () => {
    const username = translatePostgresError(
      driverError("duplicate key value violates unique constraint", {
        code: "23505",
        constraint: "users_username_key",
      }),
    );
    const email = translatePostgresError(
      driverError("duplicate key value violates unique constraint", {
        code: "23505",
        constraint: "users_email_key",
      }),
    );
    expect(username.code).toBe(Code.AlreadyExists);
    expect(username.findDetails(ErrorInfoSchema)[0]?.reason).toBe(Reason.USERNAME_TAKEN);
    expect(email.findDetails(ErrorInfoSchema)[0]?.reason).toBe(Reason.EMAIL_TAKEN);
  });

  it("maps an id clash and other errors to Internal without detail", () => {
    const pkey = driverError("duplicate key", { code: "23505", constraint: "users_pkey" });
    for (const error of [pkey, driverError("syntax error", { code: "42601" }), "boom"]) {
      const translated = translatePostgresError(error);
      expect(translated.code).toBe(Code.Internal);
      expect(translated.rawMessage).toBe("internal error");
      expect(translated.cause).toBe(error);
    }
  });

  it("passes ConnectErrors through unchanged", () => {
    const error = new ConnectError("gone", Code.Canceled);
    expect(translatePostgresError(error)).toBe(error);
  });

  it("maps a foreign-key violation to FailedPrecondition without naming the constraint", () => {
    const error = driverError(
      'insert or update on table "sessions" violates foreign key constraint "sessions_user_id_fkey"',
      { code: "23503", constraint: "sessions_user_id_fkey" },
    );
    const translated = translatePostgresError(error);
    expect(translated.code).toBe(Code.FailedPrecondition);
    expect(translated.cause).toBe(error);
    expect(translated.rawMessage).not.toMatch(/sessions|constraint|foreign/i);
  });

  it("maps a clashing refresh-token hash to Internal", () => {
    const error = driverError("duplicate key", {
      code: "23505",
      constraint: "sessions_refresh_token_hash_key",
    });
    expect(translatePostgresError(error).code).toBe(Code.Internal);
  });
});

describe("translateSqliteError", () => {
  it.each(["SQLITE_BUSY", "SQLITE_BUSY_SNAPSHOT", "SQLITE_LOCKED"])(
    "maps %s to Unavailable",
    (code) => {
      const error = driverError("database is locked", { code });
      const translated = translateSqliteError(error);
      expect(translated.code).toBe(Code.Unavailable);
      expect(translated.cause).toBe(error);
    },
  );

  it("maps unique violations to the reason of the clashing index", () => {
    const username = translateSqliteError(
      driverError("UNIQUE constraint failed: index 'users_username_key'", {
        code: "SQLITE_CONSTRAINT_UNIQUE",
      }),
    );
    const email = translateSqliteError(
      driverError("UNIQUE constraint failed: index 'users_email_key'", {
        code: "SQLITE_CONSTRAINT_UNIQUE",
      }),
    );
    expect(username.findDetails(ErrorInfoSchema)[0]?.reason).toBe(Reason.USERNAME_TAKEN);
    expect(email.findDetails(ErrorInfoSchema)[0]?.reason).toBe(Reason.EMAIL_TAKEN);
  });

  it("maps a foreign-key violation to FailedPrecondition without naming the constraint", () => {
    const error = driverError("FOREIGN KEY constraint failed", {
      code: "SQLITE_CONSTRAINT_FOREIGNKEY",
    });
    const translated = translateSqliteError(error);
    expect(translated.code).toBe(Code.FailedPrecondition);
    expect(translated.cause).toBe(error);
    expect(translated.rawMessage).not.toMatch(/constraint|foreign/i);
  });

  it("maps a clashing refresh-token hash to Internal", () => {
    const error = driverError("UNIQUE constraint failed: sessions.refresh_token_hash", {
      code: "SQLITE_CONSTRAINT_UNIQUE",
    });
    expect(translateSqliteError(error).code).toBe(Code.Internal);
  });

  it("maps an id clash and other errors to Internal without detail", () => {
    const pkey = driverError("UNIQUE constraint failed: users.id", {
      code: "SQLITE_CONSTRAINT_PRIMARYKEY",
    });
    for (const error of [
      pkey,
      driverError("disk I/O error", { code: "SQLITE_IOERR" }),
      undefined,
    ]) {
      const translated = translateSqliteError(error);
      expect(translated.code).toBe(Code.Internal);
      expect(translated.rawMessage).toBe("internal error");
    }
  });
});
