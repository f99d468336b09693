import { performance } from "node:perf_hooks";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import {
  authHeaders,
  emit,
  fail,
  type GrpcJsUserClient,
  grpcJsMetadata,
  grpcJsUserClient,
  options,
} from "./common.js";

/**
 * Server-streaming throughput: GetUserStream with `ids` copies of one
 * existing user's id, `concurrency` calls at a time over one HTTP/2
 * connection, repeated until `seconds` pass or `maxCalls` calls are made.
 * Every item must be that user (not an error item) and every call must end
 * OK with exactly `ids` items; anything else counts as an error.
 *
 * Prints {"type":"measuring"} when the measured part starts (after the
 * client's own warm-up), then {"type":"result","messages":…,"msgsPerSec":…,…}.
 */
interface Options {
  readonly url: string;
  readonly client: "connect" | "grpc-js";
  readonly token?: string;
  readonly userId: string;
  readonly ids: number;
  readonly concurrency: number;
  readonly warmupSeconds: number;
  readonly seconds: number;
  readonly maxCalls: number;
}

const opts = options<Options>();
const ids = Array.from({ length: opts.ids }, () => opts.userId);
const CALL_TIMEOUT_MS = 30_000;

/** One call; resolves with the number of good items, rejects on any problem. */
type Call = () => Promise<number>;

function connectCall(): { call: Call; close: () => void } {
  const sessionManager = new Http2SessionManager(opts.url);
  const client = createClient(
    UserService,
    createGrpcTransport({ baseUrl: opts.url, sessionManager }),
  );
  const headers = authHeaders(opts.token);
  return {
    call: async () => {
      let n = 0;
      for await (const item of client.getUserStream(
        { ids },
        { headers, timeoutMs: CALL_TIMEOUT_MS },
      )) {
        if (item.result.case !== "user" || item.result.value.id !== opts.userId) {
          throw new Error(`bad item: ${item.result.case}`);
        }
        n++;
      }
      return n;
    },
    close: () => sessionManager.abort(),
  };
}

function grpcJsCall(): { call: Call; close: () => void } {
  const client: GrpcJsUserClient = grpcJsUserClient(opts.url);
  const metadata = grpcJsMetadata(opts.token);
  return {
    call: () =>
      new Promise<number>((resolve, reject) => {
        let n = 0;
        let bad: Error | undefined;
        const stream = client.GetUserStream({ ids }, metadata, {
          deadline: Date.now() + CALL_TIMEOUT_MS,
        });
        stream.on("data", (item) => {
          if (item.result !== "user" || item.user?.id !== opts.userId) {
            bad ??= new Error(`bad item: ${item.result}`);
          } else n++;
        });
        stream.on("error", reject);
        stream.on("end", () => (bad ? reject(bad) : resolve(n)));
      }),
    close: () => client.close(),
  };
}

const { call, close } = opts.client === "grpc-js" ? grpcJsCall() : connectCall();

async function runFor(seconds: number, maxCalls: number) {
  let messages = 0;
  let calls = 0;
  let errors = 0;
  let firstError: string | undefined;
  const start = performance.now();
  const deadline = start + seconds * 1000;
  const cpuStart = process.cpuUsage();
  const worker = async () => {
    while (performance.now() < deadline && calls < maxCalls) {
      calls++;
      try {
        const n = await call();
        messages += n;
        if (n !== ids.length) throw new Error(`call ended after ${n} of ${ids.length} items`);
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, worker));
  const elapsed = (performance.now() - start) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  return {
    messages,
    calls,
    errors,
    firstError,
    seconds: elapsed,
    msgsPerSec: messages / elapsed,
    clientCpu: (cpu.user + cpu.system) / 1e6 / elapsed,
  };
}

try {
  if (opts.warmupSeconds > 0) await runFor(opts.warmupSeconds, opts.maxCalls);
  emit({ type: "measuring" });
  const result = await runFor(opts.seconds, opts.maxCalls);
  emit({ type: "result", ok: result.errors === 0, ...result });
  close();
  process.exit(0);
} catch (err) {
  fail(err);
}
