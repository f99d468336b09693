import { randomUUID } from "node:crypto";
import { chmod, mkdir, open, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Stored sessions: one per server address, in
 * `$SWITCHBOARD_CONFIG_DIR/credentials.json`, else
 * `$XDG_CONFIG_HOME/switchboard/credentials.json`, else
 * `~/.config/switchboard/credentials.json`. The directory is 0700, the file
 * 0600, written atomically (temp file + rename). Every read-modify-write
 * (login, refresh, logout) holds a lock file, so two CLI processes sharing a
 * session never both spend the same single-use refresh token (which the
 * server would treat as theft and end the session).
 */

/** One server's stored session. */
export interface StoredSession {
  readonly accessToken: string;
  readonly refreshToken: string;
  /** RFC 3339. */
  readonly accessTokenExpireTime?: string;
  /** RFC 3339. */
  readonly refreshTokenExpireTime?: string;
  readonly userId: string;
  readonly username: string;
}

interface CredentialsFile {
  version: 1;
  /** Sessions by server address (URL origin, e.g. `https://localhost:8443`). */
  servers: Record<string, StoredSession>;
}

export const CREDENTIALS_FILE = "credentials.json";

/** Where credentials live (see the module comment). */
export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SWITCHBOARD_CONFIG_DIR) return env.SWITCHBOARD_CONFIG_DIR;
  const base = env.XDG_CONFIG_HOME || join(homedir(), ".config");
  return join(base, "switchboard");
}

/** A lock older than this is from a crashed process and is broken. */
const STALE_LOCK_MS = 30_000;
/** Give up waiting for a lock after this long. */
const LOCK_WAIT_MS = 20_000;

/** The credentials file, shared safely between CLI processes. */
export class CredentialStore {
  readonly file: string;
  private readonly lockFile: string;

  constructor(readonly dir: string) {
    this.file = join(dir, CREDENTIALS_FILE);
    this.lockFile = `${this.file}.lock`;
  }

  /** The session stored for `server`, if any. */
  async get(server: string): Promise<StoredSession | undefined> {
    return (await this.read()).servers[server];
  }

  /** Stores (replaces) the session for `server`. */
  async put(server: string, session: StoredSession): Promise<void> {
    await this.withLock(async () => {
      const data = await this.read();
      data.servers[server] = session;
      await this.write(data);
    });
  }

  /**
   * Forgets the session for `server`; with `onlyIfRefreshToken`, only if it
   * still holds that refresh token (another process may have replaced it).
   * Must be called inside {@link withLock} when `locked` is true.
   */
  async delete(
    server: string,
    options: { onlyIfRefreshToken?: string; locked?: boolean } = {},
  ): Promise<boolean> {
    const run = async () => {
      const data = await this.read();
      const current = data.servers[server];
      if (!current) return false;
      if (options.onlyIfRefreshToken && current.refreshToken !== options.onlyIfRefreshToken) {
        return false;
      }
      delete data.servers[server];
      await this.write(data);
      return true;
    };
    return options.locked ? run() : this.withLock(run);
  }

  /** Replaces the session inside {@link withLock}. */
  async putLocked(server: string, session: StoredSession): Promise<void> {
    const data = await this.read();
    data.servers[server] = session;
    await this.write(data);
  }

  /**
   * Runs `fn` holding the lock file (created exclusively; a lock left by a
   * crashed process is broken after 30 s).
   */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const deadline = Date.now() + LOCK_WAIT_MS;
    for (;;) {
      try {
        const handle = await open(this.lockFile, "wx", 0o600);
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        break;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const age = await stat(this.lockFile).then(
          (s) => Date.now() - s.mtimeMs,
          () => 0,
        );
        if (age > STALE_LOCK_MS) {
          await rm(this.lockFile, { force: true });
          continue;
        }
        if (Date.now() > deadline) {
          throw new Error(
            `${this.lockFile} is held by another switchboard process; delete it if none is running`,
          );
        }
        await sleep(25 + Math.random() * 50);
      }
    }
    try {
      return await fn();
    } finally {
      await rm(this.lockFile, { force: true });
    }
  }

  private async read(): Promise<CredentialsFile> {
    let text: string;
    try {
      text = await readFile(this.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { version: 1, servers: {} };
      throw error;
    }
    try {
      const parsed = JSON.parse(text) as Partial<CredentialsFile>;
      if (parsed && typeof parsed.servers === "object" && parsed.servers !== null) {
        return { version: 1, servers: { ...parsed.servers } };
      }
    } catch {
      // Fall through: a damaged file is reported, not silently replaced.
    }
    throw new Error(`${this.file} is not a credentials file; delete it and log in again`);
  }

  private async write(data: CredentialsFile): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const tmp = `${this.file}.${process.pid}.${randomUUID()}.tmp`;
    try {
      await writeFile(tmp, `${JSON.stringify(data, null, 2)}\n`, { mode: 0o600, flag: "wx" });
      await chmod(tmp, 0o600); // in case the umask narrowed or widened it
      await rename(tmp, this.file);
    } finally {
      await rm(tmp, { force: true });
    }
  }
}

/** The claims Switchboard puts into an access token (read without verifying). */
export interface AccessTokenClaims {
  readonly sub: string;
  readonly name: string;
  readonly roles: readonly string[];
  /** Seconds since the epoch. */
  readonly exp: number | undefined;
  readonly iat: number | undefined;
  readonly sid: string | undefined;
}

/**
 * Decodes a JWT's payload. No signature check: the client only reads its
 * own token to show who it is and when it expires; the server verifies.
 */
export function decodeAccessToken(token: string): AccessTokenClaims | undefined {
  const payload = token.split(".")[1];
  if (!payload) return undefined;
  try {
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<
      string,
      unknown
    >;
    const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
    return {
      sub: typeof claims.sub === "string" ? claims.sub : "",
      name: typeof claims.name === "string" ? claims.name : "",
      roles: Array.isArray(claims.roles)
        ? claims.roles.filter((r): r is string => typeof r === "string")
        : [],
      exp: num(claims.exp),
      iat: num(claims.iat),
      sid: typeof claims.sid === "string" ? claims.sid : undefined,
    };
  } catch {
    return undefined;
  }
}

/** Refresh this long before `exp`: 30 s, or half the token's lifetime if shorter. */
export function refreshMarginMs(claims: AccessTokenClaims): number {
  if (claims.exp === undefined) return 0;
  const lifetime = claims.iat !== undefined ? (claims.exp - claims.iat) * 1000 : 60_000;
  return Math.max(0, Math.min(30_000, lifetime / 2));
}

/** Whether the token expires within its refresh margin (or already has). */
export function isNearExpiry(token: string, now = Date.now()): boolean {
  const claims = decodeAccessToken(token);
  if (!claims || claims.exp === undefined) return false;
  return claims.exp * 1000 - now <= refreshMarginMs(claims);
}
