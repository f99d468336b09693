import { createInterface } from "node:readline";
import * as grpc from "@grpc/grpc-js";
import { loadProtoPackage } from "../../test/support/grpc-js-proto.js";

/**
 * Shared by the bench's Node clients. Each client is its own process (the
 * runner pins it to the load-generator core), takes its options as one JSON
 * argument and prints JSON lines on stdout, the last one being its result.
 */

export const ROOT = new URL("../../", import.meta.url).pathname;

/** The JSON options the runner passed as the first argument. */
export function options<T>(): T {
  const raw = process.argv[2];
  if (!raw) throw new Error("expected the options as one JSON argument");
  return JSON.parse(raw) as T;
}

/** Prints one JSON line on stdout. */
export function emit(line: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

let commandLines:
  | { queue: string[]; waiters: Array<(line: string) => void>; closed: boolean }
  | undefined;

/** Resolves with the next line the runner writes on stdin, or "" once stdin is closed. */
export function nextCommand(): Promise<string> {
  if (!commandLines) {
    const state = {
      queue: [] as string[],
      waiters: [] as Array<(line: string) => void>,
      closed: false,
    };
    commandLines = state;
    const lines = createInterface({ input: process.stdin });
    lines.on("line", (line) => {
      const waiter = state.waiters.shift();
      if (waiter) waiter(line.trim());
      else state.queue.push(line.trim());
    });
    lines.on("close", () => {
      state.closed = true;
      for (const waiter of state.waiters.splice(0)) waiter("");
    });
  }
  const state = commandLines;
  const queued = state.queue.shift();
  if (queued !== undefined) return Promise.resolve(queued);
  if (state.closed) return Promise.resolve("");
  return new Promise((resolve) => state.waiters.push(resolve));
}

/** Exits with the error printed as a result line, so the runner sees why. */
export function fail(err: unknown): never {
  emit({ type: "result", ok: false, error: err instanceof Error ? err.message : String(err) });
  process.exit(1);
}

/** `authorization: Bearer …` when a token is given. */
export function authHeaders(token: string | undefined): Record<string, string> {
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** Nearest-rank percentile of ascending `sorted`. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

/** grpc-js's view of UserService (proto-loader, camelCase fields). */
export interface GrpcJsUserClient extends grpc.Client {
  GetUser(
    req: { id: string },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    cb: (err: grpc.ServiceError | null, res?: { user?: { id: string } }) => void,
  ): grpc.ClientUnaryCall;
  GetUserStream(
    req: { ids: string[] },
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
  ): grpc.ClientReadableStream<{ id: string; result?: string; user?: { id: string } | null }>;
}

/** A grpc-js UserService client for `url` (http://host:port). */
export function grpcJsUserClient(url: string): GrpcJsUserClient {
  const loaded = loadProtoPackage("switchboard/user/v1/user.proto") as unknown as {
    switchboard: {
      user: {
        v1: {
          UserService: new (
            address: string,
            credentials: grpc.ChannelCredentials,
          ) => GrpcJsUserClient;
        };
      };
    };
  };
  return new loaded.switchboard.user.v1.UserService(
    new URL(url).host,
    grpc.credentials.createInsecure(),
  );
}

/** grpc-js metadata carrying the bearer token, if any. */
export function grpcJsMetadata(token: string | undefined): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}
