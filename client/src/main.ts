import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { chatCommand } from "./commands/chat.js";
import { getCommand } from "./commands/get.js";
import { importCommand } from "./commands/import.js";
import { loginCommand } from "./commands/login.js";
import { logoutCommand } from "./commands/logout.js";
import { registerCommand } from "./commands/register.js";
import { watchCommand } from "./commands/watch.js";
import { whoamiCommand } from "./commands/whoami.js";
import { Context, type GlobalOptions, type RunFn } from "./context.js";
import { CREDENTIALS_FILE } from "./credentials.js";
import { describeError, EXIT_CODE_HELP, ExitCode } from "./errors.js";
import { Output } from "./output.js";
import { DEFAULT_ADDRESS, PROTOCOLS } from "./transport.js";

/**
 * `switchboard`: every Switchboard call kind from a terminal. This module
 * declares the program (commander), runs one command and turns its outcome
 * into an exit code.
 */

function positiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError("must be a whole number > 0");
  return n;
}

export function createProgram(run: RunFn, json = false): Command {
  const program = new Command("switchboard")
    .description("Switchboard from a terminal: users, auth, bulk import, live watch and chat")
    .version("0.1.0")
    .exitOverride()
    .showHelpAfterError(json ? false : "(run with --help for usage)")
    .configureOutput({
      // With --json, usage errors are one JSON object on stderr like every other error.
      outputError: (text, write) => {
        if (!json) return write(text);
        const message = text.replace(/^error: /, "").trim();
        write(
          `${JSON.stringify({
            error: {
              kind: "usage",
              code: "cli",
              message,
              summary: message,
              exitCode: ExitCode.usage,
            },
          })}\n`,
        );
      },
    })
    .addOption(
      new Option("-a, --addr <url>", "server address")
        .default(DEFAULT_ADDRESS)
        .env("SWITCHBOARD_ADDR"),
    )
    .addOption(
      new Option("-P, --protocol <protocol>", "wire protocol")
        .choices(PROTOCOLS)
        .default("grpc")
        .env("SWITCHBOARD_PROTOCOL"),
    )
    .option("--tls", "use TLS (https); implied by an https:// address, --ca or --insecure")
    .option("--ca <file>", "trust this CA certificate (PEM) for the server's certificate")
    .option("--insecure", "do NOT verify the server's certificate (prints a warning)")
    .addOption(
      new Option("--token <jwt>", "use this access token instead of the stored session").env(
        "SWITCHBOARD_TOKEN",
      ),
    )
    .option("--timeout <ms>", "deadline for each call, in milliseconds", positiveInt)
    .option("--json", "machine output: one JSON object per line (errors: one on stderr)")
    .addHelpText(
      "after",
      `
Credentials: \`login\` stores tokens per server address in
  $SWITCHBOARD_CONFIG_DIR/${CREDENTIALS_FILE}, else $XDG_CONFIG_HOME/switchboard/${CREDENTIALS_FILE},
  else ~/.config/switchboard/${CREDENTIALS_FILE} (mode 0600); expired access tokens are refreshed
  automatically.

${EXIT_CODE_HELP}

Examples:
  switchboard register ada --email ada@example.com --login
  switchboard --addr https://localhost:8080 --ca certs/ca.crt whoami
  switchboard get 0199… 0199…
  switchboard watch --after <cursor>
  switchboard import users.csv
  printf 'hello\\n' | switchboard chat lobby --listen-for 5`,
    );
  for (const add of [
    registerCommand,
    loginCommand,
    logoutCommand,
    whoamiCommand,
    getCommand,
    watchCommand,
    importCommand,
    chatCommand,
  ]) {
    add(program, run);
  }
  return program;
}

/** Runs the CLI with `argv` (as process.argv) and resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const json = argv.includes("--json");
  let output = new Output(json);
  let address: string | undefined;
  const run: RunFn = async (command, body) => {
    const globals = command.optsWithGlobals<GlobalOptions>();
    const ctx = new Context(globals);
    output = ctx.output;
    address = ctx.endpoint.key;
    await body(ctx);
  };
  const program = createProgram(run, json);
  try {
    await program.parseAsync([...argv]);
    return ExitCode.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and --version exit 0; every parse error is a usage error.
      return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    const report = describeError(error, address ? { address } : {});
    output.error(report);
    if (
      report.exitCode === ExitCode.other &&
      process.env.SWITCHBOARD_DEBUG &&
      error instanceof Error
    ) {
      process.stderr.write(`${error.stack ?? ""}\n`);
    }
    return report.exitCode;
  }
}

/** Waits until stdout and stderr have flushed, then exits (open HTTP/2 sessions would linger). */
async function exit(code: number): Promise<never> {
  if (process.env.SWITCHBOARD_DEBUG_MAXRSS) {
    process.stderr.write(`maxrss_kib=${process.resourceUsage().maxRSS}\n`);
  }
  await Promise.all(
    [process.stdout, process.stderr].map(
      (stream) => new Promise<void>((resolve) => stream.write("", () => resolve())),
    ),
  );
  process.exit(code);
}

await exit(await main(process.argv));
