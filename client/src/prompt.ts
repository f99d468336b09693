import { text } from "node:stream/consumers";
import { CliError, ExitCode, UsageError } from "./errors.js";

/** How a command may receive a password. */
export interface PasswordOptions {
  readonly password?: string;
  readonly passwordStdin?: boolean;
}

/**
 * The password from --password, from stdin (--password-stdin: the first
 * line), or typed at a hidden prompt when stdin is a terminal.
 */
export async function readPassword(
  options: PasswordOptions,
  prompt: string,
  confirm = false,
): Promise<string> {
  if (options.password !== undefined) return options.password;
  if (options.passwordStdin) {
    const input = await text(process.stdin);
    return input.split(/\r?\n/)[0] ?? "";
  }
  if (!process.stdin.isTTY) {
    throw new UsageError(
      "no password: pass --password-stdin (and pipe it in) or run in a terminal to be prompted",
    );
  }
  const first = await promptHidden(`${prompt}: `);
  if (confirm && (await promptHidden(`${prompt} (again): `)) !== first) {
    throw new UsageError("the passwords do not match");
  }
  return first;
}

/** Reads one line from the terminal without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding("utf8");
  stdin.resume();
  return new Promise((resolve, reject) => {
    let value = "";
    const finish = () => {
      stdin.off("data", onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write("\n");
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === "\r" || ch === "\n") {
          finish();
          resolve(value);
          return;
        }
        if (ch === "\u0003" || (ch === "\u0004" && value === "")) {
          finish();
          reject(new CliError("canceled", ExitCode.other));
          return;
        }
        if (ch === "\u007f" || ch === "\b") value = value.slice(0, -1);
        else if (ch >= " ") value += ch;
      }
    };
    stdin.on("data", onData);
  });
}
