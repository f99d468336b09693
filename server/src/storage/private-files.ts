import { chmod, mkdir, open } from "node:fs/promises";

/**
 * DATA_DIR holds the database and, outside production, the signing key: only
 * the account running the server may read it, whatever the process umask.
 */

/** Mode of a data directory Switchboard creates. */
export const PRIVATE_DIR_MODE = 0o700;

/** Mode of every file Switchboard keeps in its data directory. */
export const PRIVATE_FILE_MODE = 0o600;

/**
 * Creates `dir` (and missing parents) with mode 0700. A directory that
 * already exists is left as the operator set it up.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  const created = await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  // mkdir's mode is filtered through the umask; say exactly what we mean.
  if (created !== undefined) await chmod(dir, PRIVATE_DIR_MODE);
}

/**
 * Makes sure `file` exists with mode 0600 (creating it empty if missing, and
 * tightening one an older version created world-readable). SQLite gives a
 * database's WAL and shared-memory files the database file's mode, so
 * preparing the main file before SQLite opens it covers those too.
 */
export async function ensurePrivateFile(file: string): Promise<void> {
  const handle = await open(file, "a", PRIVATE_FILE_MODE);
  try {
    await handle.chmod(PRIVATE_FILE_MODE);
  } finally {
    await handle.close();
  }
}

/** Tightens `file` to 0600 if it exists; a missing file is fine. */
export async function tightenIfPresent(file: string): Promise<void> {
  try {
    await chmod(file, PRIVATE_FILE_MODE);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
  }
}
