import type { JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { User } from "../../gen/switchboard/user/v1/user_pb.js";
import { type ErrorReport, formatErrorReport } from "./errors.js";

/**
 * Everything the CLI prints goes through here: results on stdout (one line
 * per item for people, or one JSON object per line with `--json`), notices
 * and errors on stderr (with `--json`, also one JSON object per line).
 */
export class Output {
  constructor(
    readonly json: boolean,
    private readonly stdout: NodeJS.WritableStream = process.stdout,
    private readonly stderr: NodeJS.WritableStream = process.stderr,
  ) {}

  /** One result: `human` for people, `json` (one line) with --json. */
  result(human: string, json: JsonValue): void {
    this.stdout.write(this.json ? `${JSON.stringify(json)}\n` : `${human}\n`);
  }

  /** A notice on stderr (progress of reconnects, what was stored where). */
  notice(message: string, fields: Record<string, JsonValue> = {}): void {
    this.stderr.write(
      this.json ? `${JSON.stringify({ notice: message, ...fields })}\n` : `${message}\n`,
    );
  }

  /** A warning on stderr, always visible. */
  warn(message: string): void {
    this.stderr.write(
      this.json ? `${JSON.stringify({ warning: message })}\n` : `warning: ${message}\n`,
    );
  }

  /** The final error: one JSON object on stderr with --json, else readable lines. */
  error(report: ErrorReport): void {
    this.stderr.write(
      this.json
        ? `${JSON.stringify({ error: report })}\n`
        : `${formatErrorReport(report).join("\n")}\n`,
    );
  }
}

/** A user on one line: id, username, email, display name, creation time (tab-separated). */
export function formatUser(user: User): string {
  return [
    user.id,
    user.username,
    user.email,
    user.displayName || "-",
    user.createTime ? timestampDate(user.createTime).toISOString() : "-",
  ].join("\t");
}
