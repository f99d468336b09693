import { toJson } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { AuthService } from "../../../gen/switchboard/auth/v1/auth_pb.js";
import { UserSchema } from "../../../gen/switchboard/user/v1/user_pb.js";
import type { Context, RunFn } from "../context.js";
import { decodeAccessToken } from "../credentials.js";
import { type PasswordOptions, readPassword } from "../prompt.js";
import { sessionFrom } from "../session.js";

/** `switchboard login <username>`: Login, and store the session for this server. */
export function loginCommand(program: Command, run: RunFn): void {
  program
    .command("login")
    .description("log in (AuthService.Login) and store the tokens for this server")
    .argument("<username>", "username or email address")
    .option("-p, --password <password>", "password (visible to other local users; prefer a prompt)")
    .option("--password-stdin", "read the password from the first line of stdin")
    .action((username: string, options: PasswordOptions, command: Command) =>
      run(command, async (ctx) => {
        await loginWith(ctx, username, await readPassword(options, "Password"));
      }),
    );
}

/** Logs in and stores the session; shared with `register --login`. */
export async function loginWith(ctx: Context, username: string, password: string): Promise<void> {
  const response = await ctx
    .publicClient(AuthService)
    .login({ username, password }, ctx.callOptions());
  const session = sessionFrom(response);
  await ctx.store.put(ctx.endpoint.key, session);
  const roles = decodeAccessToken(session.accessToken)?.roles ?? [];
  ctx.output.result(
    `logged in to ${ctx.endpoint.key} as ${session.username} (roles: ${roles.join(", ") || "none"}); ` +
      `access token valid until ${session.accessTokenExpireTime ?? "?"}, ` +
      `session until ${session.refreshTokenExpireTime ?? "?"}`,
    {
      server: ctx.endpoint.key,
      user: response.user ? toJson(UserSchema, response.user) : null,
      roles: [...roles],
      accessTokenExpireTime: session.accessTokenExpireTime ?? null,
      refreshTokenExpireTime: session.refreshTokenExpireTime ?? null,
      credentialsFile: ctx.store.file,
    },
  );
}
