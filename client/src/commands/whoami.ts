import { toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { type User, UserSchema, UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import type { Context, RunFn } from "../context.js";
import { type AccessTokenClaims, decodeAccessToken } from "../credentials.js";
import { CliError, ExitCode } from "../errors.js";

/** `switchboard whoami`: the access token's claims, then GetUser for the full record. */
export function whoamiCommand(program: Command, run: RunFn): void {
  program
    .command("whoami")
    .description("show who the stored (or --token) access token identifies, and GetUser for them")
    .action((_options: unknown, command: Command) =>
      run(command, async (ctx) => {
        const claims = await claimsOf(ctx);
        let user: User | undefined;
        try {
          ({ user } = await ctx.client(UserService).getUser({ id: claims.sub }, ctx.callOptions()));
        } catch (error) {
          print(ctx, await claimsOf(ctx), undefined);
          throw error;
        }
        // GetUser may have refreshed the token: show the current one.
        print(ctx, await claimsOf(ctx), user);
      }),
    );
}

async function claimsOf(ctx: Context): Promise<AccessTokenClaims> {
  const claims = decodeAccessToken(await ctx.session.accessToken());
  if (!claims?.sub) {
    throw new CliError("the access token is not a Switchboard JWT", ExitCode.auth);
  }
  return claims;
}

function print(ctx: Context, claims: AccessTokenClaims, user: User | undefined): void {
  const expires = claims.exp === undefined ? undefined : new Date(claims.exp * 1000).toISOString();
  const human = [
    `server:  ${ctx.endpoint.key}`,
    `user id: ${claims.sub}`,
    `name:    ${claims.name}`,
    `roles:   ${claims.roles.join(", ") || "none"}`,
    `token:   expires ${expires ?? "never"}`,
  ];
  if (user) {
    human.push(`email:   ${user.email}`, `display: ${user.displayName || "-"}`);
    if (user.createTime) {
      human.push(`since:   ${timestampDate(user.createTime).toISOString()}`);
    }
  }
  ctx.output.result(human.join("\n"), {
    server: ctx.endpoint.key,
    claims: {
      sub: claims.sub,
      name: claims.name,
      roles: [...claims.roles],
      exp: expires ?? null,
    },
    user: user ? toJson(UserSchema, user) : null,
  });
}
