import { chmod, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openSqliteStore, SQLITE_FILE_NAME } from "./sqlite-store.js";

const modeOf = async (path: string) => (await stat(path)).mode & 0o777;

describe("openSqliteStore file permissions", () => {
  let parent: string;

  beforeEach(async () => {
    parent = await mkdtemp(join(tmpdir(), "sb-sqlite-perms-"));
  });
  afterEach(async () => {
    await rm(parent, { recursive: true, force: true });
  });

  it("creates a missing DATA_DIR 0700 and the database, WAL and shm files 0600", async () => {
    const dataDir = join(parent, "data");
    const store = await openSqliteStore({ dataDir });
    try {
      // A write makes SQLite create the WAL and shared-memory files.
      await store.setUserRole(["nobody"], "admin");
      expect(await modeOf(dataDir)).toBe(0o700);
      const file = join(dataDir, SQLITE_FILE_NAME);
      expect(await modeOf(file)).toBe(0o600);
      expect(await modeOf(`${file}-wal`)).toBe(0o600);
      expect(await modeOf(`${file}-shm`)).toBe(0o600);
    } finally {
      await store.close();
    }
  });

  it("tightens a world-readable database file left by an older version to 0600", async () => {
    const file = join(parent, SQLITE_FILE_NAME);
    await writeFile(file, "");
    await chmod(file, 0o644);
    const store = await openSqliteStore({ dataDir: parent });
    try {
      expect(await modeOf(file)).toBe(0o600);
    } finally {
      await store.close();
    }
  });
});
