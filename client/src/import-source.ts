import type { Readable } from "node:stream";
import { pipeline } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import { create, fromJson, type JsonValue } from "@bufbuild/protobuf";
import { type CsvError, type Info, parse } from "csv-parse";
import {
  type CreateUsersRequest,
  CreateUsersRequestSchema,
} from "../../gen/switchboard/user/v1/user_pb.js";
import { CliError, ExitCode } from "./errors.js";

/**
 * Reads an import file incrementally: CSV (csv-parse, streaming, header row
 * username,email,password,display_name) or JSON Lines (one object per line).
 * Each sendable user comes out with the 1-based line of the file it starts
 * on; lines that cannot become a request (malformed CSV, wrong field count,
 * invalid JSON) are reported through `onLocalFailure` and never sent. Blank
 * (or whitespace-only) lines are skipped in both formats. Nothing is read
 * ahead beyond the streams' small buffers: the generator reads the next line
 * only when asked for the next request.
 */

export type ImportFormat = "csv" | "jsonl";

/** A request to send and the line it came from. */
export interface ImportItem {
  readonly line: number;
  readonly request: CreateUsersRequest;
}

/** A line the CLI rejected itself. */
export interface LocalFailure {
  readonly line: number;
  readonly username: string;
  readonly message: string;
}

export interface SourceHooks {
  /** Bytes read from the input so far (progress). */
  readonly onBytes?: (bytes: number) => void;
  readonly onLocalFailure: (failure: LocalFailure) => void;
}

/** The CSV columns, in the documented order. */
export const CSV_COLUMNS = ["username", "email", "password", "display_name"] as const;
const REQUIRED_COLUMNS = ["username", "email", "password"] as const;

/** Lines (JSONL) and records (CSV) longer than this are refused, not buffered. */
export const MAX_LINE_CHARS = 1 << 20;

/** The format a file name implies. */
export function formatFromPath(path: string): ImportFormat | undefined {
  if (/\.csv$/i.test(path)) return "csv";
  if (/\.(jsonl|ndjson|json)$/i.test(path)) return "jsonl";
  return undefined;
}

/** Opens `input` as the given format; for CSV the header row is read and checked first. */
export async function openImportSource(
  input: Readable,
  format: ImportFormat,
  hooks: SourceHooks,
): Promise<AsyncGenerator<ImportItem>> {
  return format === "csv" ? openCsv(input, hooks) : openJsonl(input, hooks);
}

/** A problem with the input as a whole (bad header, overlong line): exit 5. */
export class InputError extends CliError {
  override name = "InputError";
  constructor(message: string) {
    super(message, ExitCode.invalid);
  }
}

interface CsvRecord {
  readonly record: string[];
  readonly info: Info;
}

async function openCsv(input: Readable, hooks: SourceHooks): Promise<AsyncGenerator<ImportItem>> {
  const parser = parse({
    bom: true,
    info: true,
    record_delimiter: "\n", // after normalizeNewlines, "\n" is the only line break
    skip_empty_lines: true,
    relax_column_count: true, // wrong field counts are reported per line below
    // A quote inside a field is kept as a character rather than derailing
    // the rest of the file (csv-parse would otherwise lose track of records).
    relax_quotes: true,
    skip_records_with_error: true, // what is still malformed: reported per line via "skip"
    max_record_size: MAX_LINE_CHARS,
  });
  parser.on("skip", (error: CsvError) => {
    hooks.onLocalFailure({
      line: typeof error.lines === "number" ? error.lines : 0,
      username: "",
      message: `malformed CSV: ${error.message}`,
    });
  });
  pipeline(input, normalizeNewlines(hooks.onBytes), parser, () => {
    // Errors surface through the parser's iterator.
  });
  const records = parser[Symbol.asyncIterator]() as AsyncIterator<CsvRecord>;

  let first = await records.next();
  while (!first.done && isBlankRecord(first.value.record)) first = await records.next();
  if (first.done) throw new InputError("the CSV file is empty: expected a header row");
  const headerLine = startLine(first.value);
  const header = first.value.record.map((h) => h.trim().toLowerCase());
  const column = columnsOf(header, headerLine);

  return (async function* () {
    try {
      for (;;) {
        const next = await records.next();
        if (next.done) return;
        const { record } = next.value;
        if (isBlankRecord(record)) continue;
        const line = startLine(next.value);
        if (record.length !== header.length) {
          hooks.onLocalFailure({
            line,
            username: record[column.username] ?? "",
            message: `expected ${header.length} fields (${header.join(",")}), found ${record.length}`,
          });
          continue;
        }
        const field = (i: number) => (i < 0 ? "" : (record[i] ?? ""));
        yield {
          line,
          request: create(CreateUsersRequestSchema, {
            username: field(column.username),
            email: field(column.email),
            password: field(column.password),
            displayName: field(column.display_name),
          }),
        };
      }
    } finally {
      await records.return?.();
    }
  })();
}

/** Column positions by name; a missing display_name column is -1. */
function columnsOf(
  header: readonly string[],
  line: number,
): Record<(typeof CSV_COLUMNS)[number], number> {
  const known = new Set<string>(CSV_COLUMNS);
  const unknown = header.filter((h) => !known.has(h));
  const expected = `expected a header row ${CSV_COLUMNS.join(",")} (display_name optional)`;
  if (unknown.length > 0) {
    throw new InputError(`line ${line}: unknown column(s) ${unknown.join(", ")}; ${expected}`);
  }
  const duplicate = header.find((h, i) => header.indexOf(h) !== i);
  if (duplicate) throw new InputError(`line ${line}: column ${duplicate} appears twice`);
  const missing = REQUIRED_COLUMNS.filter((c) => !header.includes(c));
  if (missing.length > 0) {
    throw new InputError(`line ${line}: missing column(s) ${missing.join(", ")}; ${expected}`);
  }
  return {
    username: header.indexOf("username"),
    email: header.indexOf("email"),
    password: header.indexOf("password"),
    display_name: header.indexOf("display_name"),
  };
}

/**
 * The line a record starts on: csv-parse counts the line it ends on, so
 * subtract the line breaks inside its (quoted) fields.
 */
function startLine({ record, info }: CsvRecord): number {
  let inner = 0;
  for (const field of record) {
    for (let i = field.indexOf("\n"); i !== -1; i = field.indexOf("\n", i + 1)) inner++;
  }
  return info.lines - inner;
}

function isBlankRecord(record: readonly string[]): boolean {
  return record.length === 0 || (record.length === 1 && (record[0] ?? "").trim() === "");
}

/**
 * Turns CRLF into LF on the fly (a CR at a chunk's end waits for the next
 * chunk), so csv-parse sees one kind of line break and counts lines exactly.
 */
function normalizeNewlines(onBytes?: (bytes: number) => void) {
  return async function* (source: AsyncIterable<Buffer | string>): AsyncGenerator<string> {
    const decoder = new StringDecoder("utf8");
    let carry = "";
    for await (const chunk of source) {
      onBytes?.(chunk.length);
      let text = carry + (typeof chunk === "string" ? chunk : decoder.write(chunk));
      carry = "";
      if (text.endsWith("\r")) {
        carry = "\r";
        text = text.slice(0, -1);
      }
      if (text) yield text.replaceAll("\r\n", "\n");
    }
    const rest = carry + decoder.end();
    if (rest) yield rest.replaceAll("\r\n", "\n");
  };
}

/** Splits a byte stream into numbered lines (LF or CRLF), reading only as lines are asked for. */
export async function* readLines(
  input: AsyncIterable<Buffer | string>,
  onBytes?: (bytes: number) => void,
): AsyncGenerator<{ line: number; text: string }> {
  const decoder = new StringDecoder("utf8");
  let carry = "";
  let line = 0;
  const strip = (s: string) => (s.endsWith("\r") ? s.slice(0, -1) : s);
  for await (const chunk of input) {
    onBytes?.(chunk.length);
    carry += typeof chunk === "string" ? chunk : decoder.write(chunk);
    let start = 0;
    for (let end = carry.indexOf("\n"); end !== -1; end = carry.indexOf("\n", start)) {
      const text = carry.slice(start, end);
      start = end + 1;
      line++;
      yield { line, text: strip(line === 1 ? text.replace(/^\uFEFF/, "") : text) };
    }
    carry = carry.slice(start);
    if (carry.length > MAX_LINE_CHARS) {
      throw new InputError(`line ${line + 1} is longer than ${MAX_LINE_CHARS} characters`);
    }
  }
  carry += decoder.end();
  if (carry !== "") {
    line++;
    yield { line, text: strip(line === 1 ? carry.replace(/^\uFEFF/, "") : carry) };
  }
}

async function* openJsonl(input: Readable, hooks: SourceHooks): AsyncGenerator<ImportItem> {
  for await (const { line, text } of readLines(input, hooks.onBytes)) {
    if (text.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      hooks.onLocalFailure({
        line,
        username: "",
        message: `invalid JSON: ${(error as Error).message}`,
      });
      continue;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      hooks.onLocalFailure({ line, username: "", message: "expected a JSON object" });
      continue;
    }
    const username = (value as { username?: unknown }).username;
    try {
      yield { line, request: fromJson(CreateUsersRequestSchema, value as JsonValue) };
    } catch (error) {
      hooks.onLocalFailure({
        line,
        username: typeof username === "string" ? username : "",
        message: (error as Error).message,
      });
    }
  }
}

/**
 * Maps a request's position in the stream back to its file line, in memory
 * proportional to the number of places where the two drift apart (skipped
 * blank or bad lines, multi-line records), not to the file's length.
 */
export class LineMap {
  private readonly starts: number[] = [];
  private readonly offsets: number[] = [];

  /** Records that request `index` (0-based, increasing) came from `line`. */
  add(index: number, line: number): void {
    const offset = line - index;
    if (this.offsets[this.offsets.length - 1] !== offset) {
      this.starts.push(index);
      this.offsets.push(offset);
    }
  }

  /** The line of request `index`, or undefined for an index never added. */
  line(index: number): number | undefined {
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if ((this.starts[mid] ?? 0) <= index) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found < 0 ? undefined : index + (this.offsets[found] ?? 0);
  }

  /** How many drift points are kept (for tests). */
  get size(): number {
    return this.starts.length;
  }
}
