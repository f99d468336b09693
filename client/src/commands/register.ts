import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { UserSchema, UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import type { RunFn } from "../context.js";
import { formatUser } from "../output.js";
import { type PasswordOptions, readPassword } from "../prompt.js";
import { loginWith } from "./login.js";

interface RegisterOptions extends PasswordOptions {
  readonly email: string;
  readonly displayName?: string;
  readonly login?: boolean;
}

/** `switchboard register <username> --email …`: RegisterUser, optionally then Login. */
export function registerCommand(program: Command, run: RunFn): void {
  program
    .command("register")
    .description("create an account (RegisterUser); --login also logs in")
    .argument("<username>", "3 to 32 letters, digits, '_', '.' or '-'")
    .requiredOption("-e, --email <email>", "email address")
    .option("-n, --display-name <name>", "name shown to others")
    .option("-p, --password <password>", "password (visible to other local users; prefer a prompt)")
    .option("--password-stdin", "read the password from the first line of stdin")
    .option("--login", "log in right after registering")
    .action((username: string, options: RegisterOptions, command: Command) =>
      run(command, async (ctx) => {
        const password = await readPassword(options, "Password", true);
        const { user } = await ctx.publicClient(UserService).registerUser(
          {
            username,
            email: options.email,
            password,
            displayName: options.displayName ?? "",
          },
          ctx.callOptions(),
        );
        if (!user) throw new Error("the server returned no user");
        ctx.output.result(`registered ${formatUser(user)}`, {
          registered: toJson(UserSchema, user),
        });
        if (options.login) await loginWith(ctx, username, password);
      }),
    );
}
