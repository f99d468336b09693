import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, InvalidArgumentError, Option } from "commander";
import { UserService, WatchUsersResponseSchema } from "../../../gen/switchboard/user/v1/user_pb.js";
import { toRpcError } from "../../../shared/rpc-error.js";
import type { RunFn } from "../context.js";
import { describeError, isRetryable } from "../errors.js";
import { formatUser } from "../output.js";
import { backoffMs, pause } from "../retry.js";

interface WatchOptions {
  readonly fromStart?: boolean;
  readonly after?: string;
  readonly count?: number;
  readonly maxRetries: number;
}

/** Parses a non-negative integer option. */
export function nonNegativeInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new InvalidArgumentError("must be an integer ≥ 0");
  return n;
}

/**
 * `switchboard watch`: WatchUsers, one line per user, live. When the
 * connection drops (server restart, network), it reconnects with backoff and
 * resumes after the last cursor it printed, so no user is skipped or repeated.
 */
export function watchCommand(program: Command, run: RunFn): void {
  program
    .command("watch")
    .description(
      "follow users live (WatchUsers): every user from the start (or after --after), then new ones; " +
        "reconnects and resumes from the last cursor when the connection drops",
    )
    .addOption(
      new Option("--from-start", "start from the first user (the default)").conflicts("after"),
    )
    .option("--after <cursor>", "resume after this cursor (the last column of a previous run)")
    .option("--count <n>", "exit after this many users", nonNegativeInt)
    .option(
      "--max-retries <n>",
      "give up after this many failed reconnects in a row",
      nonNegativeInt,
      Number.POSITIVE_INFINITY,
    )
    .addHelpText(
      "after",
      "\nOutput: id, username, email, display name, creation time, cursor (tab-separated).",
    )
    .action((options: WatchOptions, command: Command) =>
      run(command, async (ctx) => {
        const users = ctx.client(UserService);
        let cursor = options.fromStart ? "" : (options.after ?? "");
        let received = 0;
        let failures = 0;
        if (options.count === 0) return;
        for (;;) {
          try {
            for await (const item of users.watchUsers({ afterCursor: cursor }, ctx.callOptions())) {
              failures = 0;
              cursor = item.cursor;
              const line = item.user ? formatUser(item.user) : "-";
              ctx.output.result(`${line}\t${item.cursor}`, toJson(WatchUsersResponseSchema, item));
              if (options.count !== undefined && ++received >= options.count) return;
            }
            throw new ConnectError("the server ended the feed", Code.Unavailable);
          } catch (error) {
            if (!isRetryable(error) || failures >= options.maxRetries) throw error;
            const delay = backoffMs(failures++, toRpcError(error).retryDelayMs);
            ctx.output.notice(
              `watch: connection lost (${describeError(error).summary}); reconnecting in ` +
                `${(delay / 1000).toFixed(1)} s, resuming ${cursor ? `after cursor ${cursor}` : "from the start"}`,
              { reconnectInMs: delay, cursor },
            );
            await pause(delay);
          }
        }
      }),
    );
}
