import type { Command } from "commander";
import { AuthService } from "../../../gen/switchboard/auth/v1/auth_pb.js";
import { toRpcError } from "../../../shared/rpc-error.js";
import type { RunFn } from "../context.js";
import { AuthRequiredError, findCliError } from "../errors.js";

/** `switchboard logout`: AuthService.Logout, then forget the stored tokens. */
export function logoutCommand(program: Command, run: RunFn): void {
  program
    .command("logout")
    .description("end the stored session (AuthService.Logout) and delete its tokens")
    .option("--local", "only delete the stored tokens, without telling the server")
    .action((options: { local?: boolean }, command: Command) =>
      run(command, async (ctx) => {
        const key = ctx.endpoint.key;
        const stored = await ctx.session.stored();
        if (!stored) {
          ctx.output.result(`not logged in to ${key}`, { server: key, loggedOut: false });
          return;
        }
        let note = "";
        if (!options.local) {
          try {
            // Rotate first if the access token has expired, so the refresh
            // token sent is the current one.
            await ctx.session.ensureFresh();
            const logout = (refreshToken: string) =>
              ctx.client(AuthService).logout({ refreshToken }, ctx.callOptions());
            const current = (await ctx.session.stored()) ?? stored;
            await logout(current.refreshToken);
            const after = await ctx.session.stored();
            if (after && after.refreshToken !== current.refreshToken) {
              await logout(after.refreshToken);
            }
          } catch (error) {
            const ended =
              findCliError(error) instanceof AuthRequiredError ||
              toRpcError(error).kind === "unauthenticated";
            if (!ended) throw error; // keep the tokens: the session is still alive
            note = " (the session had already ended)";
          }
        }
        await ctx.store.delete(key);
        ctx.output.result(`logged out of ${key}${note}`, {
          server: key,
          loggedOut: true,
          serverNotified: !options.local,
        });
      }),
    );
}
