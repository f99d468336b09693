import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";
import {
  formatFromPath,
  type ImportFormat,
  type ImportItem,
  LineMap,
  type LocalFailure,
  openImportSource,
} from "./import-source.js";

async function readAll(text: string | Buffer, format: ImportFormat, chunkSize = 7) {
  const buffer = Buffer.isBuffer(text) ? text : Buffer.from(text);
  // Small chunks: line breaks (and CRLF pairs, and UTF-8 sequences) split across chunks.
  const chunks: Buffer[] = [];
  for (let i = 0; i < buffer.length; i += chunkSize) chunks.push(buffer.subarray(i, i + chunkSize));
  const failures: LocalFailure[] = [];
  const items: ImportItem[] = [];
  const source = await openImportSource(Readable.from(chunks), format, {
    onLocalFailure: (f) => failures.push(f),
  });
  for await (const item of source) items.push(item);
  return {
    lines: items.map((i) => [i.line, i.request.username, i.request.displayName] as const),
    failures: failures.map((f) => [f.line, f.message] as const),
  };
}

const CSV = [
  "username,email,password,display_name", // 1
  "", // 2
  "ada,ada@example.com,secret-1,Ada", // 3
  '"bo",bo@example.com,"multi', // 4
  'line",Bo', // 5
  "   ", // 6
  "cy,cy@example.com", // 7: too few fields
  "dé,dé@example.com,secret-2,Dé Ünïcode", // 8
  "", // 9
  "ed,ed@example.com,secret-3,Ed", // 10, no trailing newline
];

describe("openImportSource (CSV)", () => {
  for (const [name, newline] of [
    ["LF", "\n"],
    ["CRLF", "\r\n"],
  ] as const) {
    it(`numbers records by the line they start on (${name}), skipping blank lines`, async () => {
      for (const chunkSize of [1, 7, 4096]) {
        const { lines, failures } = await readAll(CSV.join(newline), "csv", chunkSize);
        expect(lines).toEqual([
          [3, "ada", "Ada"],
          [4, "bo", "Bo"],
          [8, "dé", "Dé Ünïcode"],
          [10, "ed", "Ed"],
        ]);
        expect(failures).toEqual([
          [7, "expected 4 fields (username,email,password,display_name), found 2"],
        ]);
      }
    });
  }

  it("keeps a quoted line break inside the field", async () => {
    const source = await openImportSource(Readable.from([CSV.join("\r\n")]), "csv", {
      onLocalFailure: () => {},
    });
    const items: ImportItem[] = [];
    for await (const item of source) items.push(item);
    expect(items[1]?.request.password).toBe("multi\nline");
  });

  it("accepts any column order, an optional display_name and a BOM", async () => {
    const text = "\uFEFFEmail,Username,Password\nada@example.com,ada,secret-1\n";
    const { lines } = await readAll(text, "csv");
    expect(lines).toEqual([[2, "ada", ""]]);
  });

  it("refuses a header with unknown or missing columns before sending anything", async () => {
    await expect(readAll("username,mail,password\n", "csv")).rejects.toThrow(
      /line 1: unknown column\(s\) mail/,
    );
    await expect(readAll("\n\nusername,password\n", "csv")).rejects.toThrow(
      /line 3: missing column\(s\) email/,
    );
    await expect(readAll("", "csv")).rejects.toThrow(/empty/);
  });

  it("keeps stray quotes as text (the server judges the field), and reports an unclosed one", async () => {
    const text = 'username,email,password\na,"b"x,c\nok,ok@example.com,secret-1\nbad,"open,c';
    const { lines, failures } = await readAll(text, "csv");
    expect(lines).toEqual([
      [2, "a", ""],
      [3, "ok", ""],
    ]);
    expect(failures).toEqual([[4, expect.stringMatching(/^malformed CSV: Quote Not Closed/)]]);
  });
});

describe("openImportSource (JSONL)", () => {
  it("numbers lines (LF or CRLF), skips blank ones, rejects bad ones locally", async () => {
    const text = [
      '{"username":"ada","email":"a@example.com","password":"p","display_name":"Ada"}',
      "",
      "  ",
      "{not json",
      '{"username":"bo","displayName":"Bo"}',
      "[1,2]",
      '{"username":"cy","extra":1}',
      '{"username":"dé"}',
    ];
    for (const newline of ["\n", "\r\n"]) {
      const { lines, failures } = await readAll(text.join(newline), "jsonl", 5);
      expect(lines).toEqual([
        [1, "ada", "Ada"],
        [5, "bo", "Bo"],
        [8, "dé", ""],
      ]);
      expect(failures.map(([line]) => line)).toEqual([4, 6, 7]);
      expect(failures[0]?.[1]).toMatch(/^invalid JSON/);
      expect(failures[1]?.[1]).toBe("expected a JSON object");
      expect(failures[2]?.[1]).toMatch(/key "extra" is unknown/);
    }
  });
});

describe("reading is lazy", () => {
  for (const format of ["csv", "jsonl"] as const) {
    it(`${format}: pulling a few requests reads only a little of an endless input`, async () => {
      let produced = 0;
      const endless = Readable.from(
        (function* () {
          if (format === "csv") yield "username,email,password\n";
          for (let i = 0; ; i++) {
            const line =
              format === "csv"
                ? `user${i},user${i}@example.com,password-${i}\n`
                : `{"username":"user${i}","email":"user${i}@example.com","password":"password-${i}"}\n`;
            produced += line.length;
            yield line;
          }
        })(),
      );
      const source = await openImportSource(endless, format, { onLocalFailure: () => {} });
      for (let i = 0; i < 5; i++) {
        const next = await source.next();
        expect(next.value?.request.username).toBe(`user${i}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      // Only the streams' small buffers are filled: far less than a megabyte.
      expect(produced).toBeLessThan(256 * 1024);
      await source.return(undefined);
    });
  }
});

describe("LineMap", () => {
  it("maps stream positions to lines with memory per drift point, not per line", () => {
    const map = new LineMap();
    for (let i = 0; i < 100_000; i++) map.add(i, i + 2); // header: line = index + 2
    map.add(100_000, 100_010); // blank lines before it
    map.add(100_001, 100_011);
    expect(map.size).toBe(2);
    expect(map.line(0)).toBe(2);
    expect(map.line(99_999)).toBe(100_001);
    expect(map.line(100_000)).toBe(100_010);
    expect(map.line(100_001)).toBe(100_011);
    expect(new LineMap().line(0)).toBeUndefined();
  });
});

describe("formatFromPath", () => {
  it("knows CSV and JSON Lines extensions", () => {
    expect(formatFromPath("a.CSV")).toBe("csv");
    expect(formatFromPath("a.jsonl")).toBe("jsonl");
    expect(formatFromPath("a.ndjson")).toBe("jsonl");
    expect(formatFromPath("-")).toBeUndefined();
  });
});
