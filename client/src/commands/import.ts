import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import type { Readable } from "node:stream";
import { Presets, SingleBar } from "cli-progress";
import { type Command, Option } from "commander";
import type { CreateUsersResponse } from "../../../gen/switchboard/user/v1/user_pb.js";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { codeName } from "../../../shared/rpc-error.js";
import type { RunFn } from "../context.js";
import { CliError, ExitCode, UsageError } from "../errors.js";
import {
  CSV_COLUMNS,
  formatFromPath,
  type ImportFormat,
  LineMap,
  type LocalFailure,
  openImportSource,
} from "../import-source.js";

/** The server lists at most this many failures (user.proto); so does the CLI for its own. */
export const MAX_LISTED_FAILURES = 10_000;

interface ImportOptions {
  readonly format?: ImportFormat;
  readonly progress: boolean;
}

/** One failed line, as printed. */
interface FailedLine {
  readonly line: number | null;
  /** Position in the request stream (null: rejected by the CLI, never sent). */
  readonly index: number | null;
  readonly username: string;
  readonly code: string;
  readonly message: string;
}

/**
 * `switchboard import <file|->`: CreateUsers as a client stream, fed line by
 * line from the file (admins only). Prints created/failed counts and every
 * failed line's number and reason; exits 5 when any line failed.
 */
export function importCommand(program: Command, run: RunFn): void {
  program
    .command("import")
    .description(
      "bulk-create users (CreateUsers, admin only) from a CSV or JSONL file, streamed line by line",
    )
    .argument("<file>", "a .csv or .jsonl file, or - for stdin (then --format is required)")
    .addOption(
      new Option("--format <format>", "input format (default: from the file extension)").choices([
        "csv",
        "jsonl",
      ]),
    )
    .option("--no-progress", "no progress bar (it only shows when stderr is a terminal)")
    .addHelpText(
      "after",
      `
CSV: a header row naming the columns ${CSV_COLUMNS.join(",")} (display_name optional,
any order), then one user per record; quoted fields may span lines.
JSONL: one object per line, e.g. {"username":"ada","email":"ada@example.com","password":"…","display_name":"Ada"}.
Blank lines are skipped. Line numbers in the summary are the file's own (1-based; the CSV header
is line 1; a multi-line record is reported at its first line). Lines the CLI cannot parse are
reported without being sent. The server lists at most the first ${MAX_LISTED_FAILURES} failures; the
counts are always exact. Exits 5 if any line failed.`,
    )
    .action((file: string, options: ImportOptions, command: Command) =>
      run(command, async (ctx) => {
        const format = options.format ?? formatFromPath(file);
        if (!format) {
          throw new UsageError(
            file === "-"
              ? "reading stdin: pass --format csv or --format jsonl"
              : `${file}: cannot tell the format from the name; pass --format csv or --format jsonl`,
          );
        }
        const { input, size } = await openInput(file);
        const local: LocalFailure[] = [];
        let localCount = 0;
        let bytesRead = 0;
        const progress = createProgress(
          options.progress && !!process.stderr.isTTY && !ctx.output.json,
          size,
        );
        const source = await openImportSource(input, format, {
          onBytes: (n) => {
            bytesRead += n;
          },
          onLocalFailure: (failure) => {
            localCount++;
            if (local.length < MAX_LISTED_FAILURES) local.push(failure);
          },
        });

        const lines = new LineMap();
        let sent = 0;
        async function* requests() {
          for await (const item of source) {
            lines.add(sent, item.line);
            sent++;
            if (sent % 256 === 0) progress?.update(bytesRead, sent);
            yield item.request;
          }
          progress?.update(bytesRead, sent);
        }

        let response: CreateUsersResponse;
        try {
          response = await ctx.client(UserService).createUsers(requests(), ctx.callOptions());
        } finally {
          progress?.stop();
        }
        report(ctx.output, file, sent, response, lines, local, localCount);
      }),
    );
}

async function openInput(file: string): Promise<{ input: Readable; size?: number }> {
  if (file === "-") return { input: process.stdin };
  try {
    const info = await stat(file);
    if (!info.isFile()) throw new UsageError(`${file}: not a regular file`);
    return { input: createReadStream(file), size: info.size };
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`${file}: ${(error as Error).message}`);
  }
}

function createProgress(enabled: boolean, size: number | undefined) {
  if (!enabled) return undefined;
  const bar = new SingleBar(
    {
      stream: process.stderr,
      format:
        size === undefined
          ? "import | {lines} users sent | {duration_formatted}"
          : "import |{bar}| {percentage}% | {lines} users sent | ETA {eta_formatted}",
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  bar.start(size ?? 0, 0, { lines: 0 });
  return {
    update: (bytes: number, lines: number) => bar.update(bytes, { lines }),
    stop: () => bar.stop(),
  };
}

function report(
  output: import("../output.js").Output,
  file: string,
  sent: number,
  response: CreateUsersResponse,
  lines: LineMap,
  local: readonly LocalFailure[],
  localCount: number,
): void {
  const fromServer: FailedLine[] = response.failures.map((f) => ({
    line: lines.line(f.index) ?? null,
    index: f.index,
    username: f.username,
    code: codeName(f.code as number),
    message: f.message,
  }));
  const fromCli: FailedLine[] = local.map((f) => ({
    line: f.line,
    index: null,
    username: f.username,
    code: "invalid_argument",
    message: f.message,
  }));
  const failures = mergeByLine(fromServer, fromCli);
  const failedCount = response.failedCount + localCount;
  const unlistedServer = response.failedCount - response.failures.length;
  const unlistedLocal = localCount - local.length;
  const notes: string[] = [];
  if (unlistedServer > 0) {
    notes.push(
      `the server lists only its first ${response.failures.length} failures: ${unlistedServer} more lines failed without details`,
    );
  }
  if (unlistedLocal > 0) {
    notes.push(`${unlistedLocal} more lines the CLI could not parse are not listed`);
  }

  if (output.json) {
    output.result("", {
      file,
      sent,
      createdCount: response.createdCount,
      failedCount,
      failures: failures.map((f) => ({ ...f })),
      unlistedFailures: unlistedServer + unlistedLocal,
      notes,
    });
  } else {
    const text = [
      `import ${file}: ${response.createdCount} created, ${failedCount} failed (${sent} users sent)`,
      ...failures.map(
        (f) =>
          `line ${f.line ?? "?"}: ${f.username ? `${f.username}: ` : ""}${f.code}: ${f.message}`,
      ),
      ...notes.map((n) => `note: ${n}`),
    ];
    output.result(text.join("\n"), null);
  }
  if (failedCount > 0) {
    throw new CliError(
      `${failedCount} of ${sent + localCount} lines failed`,
      ExitCode.invalid,
      "fix the lines listed above and import them again",
    );
  }
}

/** Merges two lists sorted by line (server failures come in stream order). */
function mergeByLine(a: readonly FailedLine[], b: readonly FailedLine[]): FailedLine[] {
  const sortedB = [...b].sort((x, y) => (x.line ?? 0) - (y.line ?? 0));
  const out: FailedLine[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < sortedB.length) {
    const x = a[i];
    const y = sortedB[j];
    if (y === undefined || (x !== undefined && (x.line ?? 0) <= (y.line ?? 0))) {
      if (x) out.push(x);
      i++;
    } else {
      out.push(y);
      j++;
    }
  }
  return out;
}
