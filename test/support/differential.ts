import { randomBytes } from "node:crypto";
import { createTokenService } from "../../server/src/auth/tokens.js";
import { openStore } from "../../server/src/storage/index.js";
import type { Store } from "../../server/src/storage/store.js";
import type { Session } from "./auth.js";
import { startTestServer, type TestServer, tempDataDir } from "./server.js";

/**
 * What the differential tests of the engine against connect-fastify share:
 * servers built by the same `build` on ONE store and ONE signing key, some
 * with RPC_ENGINE=connect (the reference) and some with the engine, and a store
 * wrapper that injects a bug and a read that waits for the call's signal.
 */

/**
 * One gRPC envelope around `bytes`: the flags byte, then the length, which
 * may lie (`declaredLength`) to build broken bodies.
 */
export function envelope(bytes: Uint8Array, flags = 0, declaredLength = bytes.byteLength): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(declaredLength, 1);
  return Buffer.concat([head, bytes]);
}

/** The largest message both servers accept. */
export const MAX_MESSAGE_BYTES = 2048;
/** A valid-looking id whose store read throws a TypeError (a bug in the store). */
export const BUG_ID = "00000000-0000-7000-8000-00000000b0c5";
/** A valid-looking id whose store read waits until the call's signal aborts. */
export const SLOW_ID = "00000000-0000-7000-8000-0000000051e0";

/** Why a SLOW_ID read ended, and on which server (the label set when it started). */
export interface SlowAbort {
  readonly server: string;
  readonly reason: unknown;
}

/** The shared store, key and servers of one differential test file. */
export interface Differential {
  readonly store: Store;
  /** Every SLOW_ID read that was aborted, in order. */
  readonly slowAborts: SlowAbort[];
  /** Labels the store reads that start from now on (e.g. "connect", "fast"). */
  label(server: string): void;
  /**
   * Starts a server on the shared store and key, served by Switchboard's
   * engine or by connect-fastify (RPC_ENGINE); `env` adds to the shared
   * configuration.
   */
  start(engine: "engine" | "connect", env?: Record<string, string>): Promise<TestServer>;
  /** An access token for `session` that expired an hour ago, signed with the shared key. */
  expiredToken(session: Session): Promise<string>;
  /** Closes every server started, then the store. */
  close(): Promise<void>;
}

/** Opens the shared store; the servers are started with `start`. */
export async function openDifferential(): Promise<Differential> {
  const key = randomBytes(32);
  const env = {
    AUTH_SIGNING_KEY: key.toString("base64url"),
    MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
    RATE_LIMIT_LOGIN: "3/60",
  };
  const dataDir = await tempDataDir();
  const store = await openStore({ dataDir });
  const slowAborts: SlowAbort[] = [];
  const servers: TestServer[] = [];
  let current = "";
  const realGetUser = store.getUser.bind(store);
  store.getUser = async (id, options) => {
    if (id === BUG_ID) throw new TypeError("a bug in the store");
    if (id === SLOW_ID) {
      const signal = options?.signal;
      const server = current;
      return new Promise((_, reject) => {
        signal?.addEventListener("abort", () => {
          slowAborts.push({ server, reason: signal.reason });
          reject(signal.reason);
        });
      });
    }
    return realGetUser(id, options);
  };
  return {
    store,
    slowAborts,
    label(server) {
      current = server;
    },
    async start(engine, extra = {}) {
      const server = await startTestServer({
        env: { ...env, ...extra, RPC_ENGINE: engine },
        dataDir,
        store,
      });
      servers.push(server);
      return server;
    },
    async expiredToken(session) {
      const issued = await createTokenService({
        key,
        accessTtlSeconds: 900,
        now: () => new Date(Date.now() - 3600_000),
      }).issueAccessToken({
        userId: session.userId,
        username: session.username,
        roles: ["user"],
        sessionId: "s1",
      });
      return issued.token;
    },
    async close() {
      for (const server of servers.reverse()) await server.close();
      await store.close();
    },
  };
}
