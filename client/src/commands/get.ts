import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import {
  GetUserStreamResponseSchema,
  UserService,
} from "../../../gen/switchboard/user/v1/user_pb.js";
import { codeName } from "../../../shared/rpc-error.js";
import type { RunFn } from "../context.js";
import { CliError, ExitCode, exitCodeForCode } from "../errors.js";
import { formatUser } from "../output.js";

/** GetUserStream takes at most this many ids per call. */
export const IDS_PER_CALL = 1000;

/**
 * `switchboard get <id…>`: GetUserStream, one line per id in the order given,
 * each printed as it arrives. Unknown ids print as "not found"; the command
 * then exits 4 after printing every id.
 */
export function getCommand(program: Command, run: RunFn): void {
  program
    .command("get")
    .description(
      "fetch users by id (GetUserStream), printing each as it arrives; exits 4 if any id is not found",
    )
    .argument("<ids...>", "user ids")
    .action((ids: string[], _options: unknown, command: Command) =>
      run(command, async (ctx) => {
        const users = ctx.client(UserService);
        let failed = 0;
        let firstFailureCode: number | undefined;
        for (let start = 0; start < ids.length; start += IDS_PER_CALL) {
          const batch = ids.slice(start, start + IDS_PER_CALL);
          for await (const item of users.getUserStream({ ids: batch }, ctx.callOptions())) {
            const json = toJson(GetUserStreamResponseSchema, item);
            if (item.result.case === "user") {
              ctx.output.result(formatUser(item.result.value), json);
              continue;
            }
            failed++;
            const status = item.result.case === "error" ? item.result.value : undefined;
            const code = status?.code ?? 2;
            firstFailureCode ??= code;
            ctx.output.result(
              code === 5
                ? `${item.id}\tnot found`
                : `${item.id}\t${codeName(code)}: ${status?.message ?? ""}`,
              json,
            );
          }
        }
        if (failed > 0) {
          throw new CliError(
            `${failed} of ${ids.length} ${ids.length === 1 ? "id was" : "ids were"} not found`,
            firstFailureCode === undefined ? ExitCode.notFound : exitCodeForCode(firstFailureCode),
          );
        }
      }),
    );
}
