import { randomUUID } from "node:crypto";
import { createInterface, type Interface } from "node:readline";
import { create, toJson } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { type Command, InvalidArgumentError } from "commander";
import {
  type ChatRequest,
  ChatRequestSchema,
  type ChatResponse,
  ChatResponseSchema,
  ChatService,
  type RoomEvent,
} from "../../../gen/switchboard/chat/v1/chat_pb.js";
import { shouldRefresh, toRpcError } from "../../../shared/rpc-error.js";
import { Channel } from "../channel.js";
import type { Context, RunFn } from "../context.js";
import {
  AuthRequiredError,
  CliError,
  describeError,
  exitCodeForCode,
  findCliError,
  isRetryable,
} from "../errors.js";
import { backoffMs, pause } from "../retry.js";
import { nonNegativeInt } from "./watch.js";

interface ChatOptions {
  readonly afterId?: bigint;
  readonly listenFor: number;
  readonly maxRetries: number;
}

/** How long to wait for the server to close a stream we are leaving. */
const LEAVE_GRACE_MS = 2000;

function parseSeconds(value: string): number {
  if (value === "forever" || value === "inf") return Number.POSITIVE_INFINITY;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    throw new InvalidArgumentError("must be a number of seconds ≥ 0, or 'forever'");
  }
  return n;
}

function parseMessageId(value: string): bigint {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("must be a message id (an integer)");
  return BigInt(value);
}

/**
 * `switchboard chat <room>`: the bidi Chat call (over gRPC, and Connect on
 * HTTP/2); over gRPC-Web, which cannot stream both ways, Subscribe + Send.
 * Lines from stdin (a terminal or a pipe) are sent; everyone's messages are
 * printed as they arrive. `/quit` or the end of stdin leaves, after every
 * sent message is acknowledged (and --listen-for seconds more).
 */
export function chatCommand(program: Command, run: RunFn): void {
  program
    .command("chat")
    .description(
      "chat in a room (ChatService.Chat; Subscribe + Send over grpc-web): send stdin lines, print everyone's messages",
    )
    .argument("<room>", "1 to 64 lowercase letters, digits, '-' or '_'")
    .option(
      "--after-id <id>",
      "first replay the room's messages after this id (0: the whole history); default: only new ones",
      parseMessageId,
    )
    .option(
      "--listen-for <seconds>",
      "after stdin ends and every sent message is acknowledged, keep receiving this long ('forever' to stay)",
      parseSeconds,
      0,
    )
    .option(
      "--max-retries <n>",
      "give up after this many failed reconnects in a row",
      nonNegativeInt,
      Number.POSITIVE_INFINITY,
    )
    .addHelpText(
      "after",
      `
Type a line and press Enter to send it; /quit (or Ctrl-D, or Ctrl-C) leaves. With stdin piped,
every line is sent, then the command waits for the server's acknowledgements and leaves.
Output: "[time] username: text" per message, "* …" for people joining and leaving.
Dropped connections are resumed after the last message seen; unacknowledged messages are
re-sent with the same client id, so none is stored twice. Exits 5 (or per the server's code) if
the server refused one of your messages.`,
    )
    .action((room: string, options: ChatOptions, command: Command) =>
      run(command, (ctx) => new ChatSession(ctx, room, options).run()),
    );
}

class ChatSession {
  /** Sent but not yet acknowledged, by client_msg_id (insertion order = send order). */
  private readonly pending = new Map<string, string>();
  /** The last message id seen in the room (resume point; replays are deduplicated). */
  private lastId: bigint;
  private inputDone = false;
  private leaving = false;
  private refused = 0;
  private firstRefusedCode: number | undefined;
  private rl: Interface | undefined;
  private readonly tty = !!process.stdin.isTTY;
  private readonly bidi: boolean;
  /** Bidi: the current stream's outgoing frames. */
  private outbox: Channel<ChatRequest> | undefined;
  /** Aborts the current stream. */
  private streamAbort: AbortController | undefined;
  /** Subscribe + Send: message ids waiting to be sent, in order. */
  private readonly sendQueue = new Channel<string>();
  private readonly stateChanged = new Set<() => void>();
  /** Ends --listen-for early (Ctrl-C, /quit). */
  private readonly hurry = new AbortController();
  private joinedOnce = false;
  private readonly joined: Promise<void>;
  private markJoined: () => void = () => {};

  constructor(
    private readonly ctx: Context,
    private readonly room: string,
    private readonly options: ChatOptions,
  ) {
    this.lastId = options.afterId ?? 0n;
    this.bidi = ctx.protocol !== "grpc-web";
    this.joined = new Promise((resolve) => {
      this.markJoined = resolve;
    });
  }

  async run(): Promise<void> {
    const onSignal = () => this.quit();
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    if (this.options.afterId === undefined) {
      // Live only: start after the room's newest message (Join/Subscribe
      // with after_id 0 would replay the whole room).
      const { messages } = await this.ctx
        .client(ChatService)
        .history({ room: this.room, pageSize: 1 }, this.ctx.callOptions());
      this.lastId = messages[messages.length - 1]?.id ?? 0n;
    }
    this.startInput();
    const stream = this.bidi
      ? this.runBidi()
      : Promise.all([this.runSubscribe(), this.runSender()]).then(() => {});
    const finisher = (async () => {
      await this.until(() => this.inputDone && this.pending.size === 0);
      if (this.options.listenFor > 0 && !this.hurry.signal.aborted) {
        await pause(
          Number.isFinite(this.options.listenFor) ? this.options.listenFor * 1000 : 2 ** 31 - 1,
          this.hurry.signal,
        );
      }
      this.leave();
      await stream;
    })();
    try {
      await Promise.race([stream, finisher]);
      this.leave();
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      this.rl?.close();
    }
    if (this.refused > 0) {
      throw new CliError(
        `${this.refused} of your messages ${this.refused === 1 ? "was" : "were"} refused`,
        exitCodeForCode(this.firstRefusedCode ?? Code.Unknown),
      );
    }
  }

  // ---- input -------------------------------------------------------------

  private startInput(): void {
    const rl = createInterface({
      input: process.stdin,
      ...(this.tty ? { output: process.stdout, terminal: true, prompt: `${this.room}> ` } : {}),
    });
    this.rl = rl;
    rl.on("line", (line) => {
      if (this.inputDone) return;
      const text = line.replace(/\s+$/, "");
      if (text.trim() === "/quit") {
        this.hurry.abort();
        this.endInput();
        return;
      }
      if (text.trim() !== "") this.send(text);
      if (this.tty) rl.prompt();
    });
    rl.on("close", () => this.endInput());
    rl.on("SIGINT", () => this.quit());
    if (this.tty) rl.prompt();
  }

  private endInput(): void {
    if (this.inputDone) return;
    this.inputDone = true;
    this.sendQueue.end();
    this.rl?.close();
    this.changed();
  }

  /** Ctrl-C: leave as soon as what was sent is acknowledged; twice: at once. */
  private quit(): void {
    if (this.hurry.signal.aborted) process.exit(130);
    this.hurry.abort();
    this.endInput();
  }

  private send(text: string): void {
    const id = randomUUID();
    this.pending.set(id, text);
    if (this.bidi) this.outbox?.push(this.messageFrame(id, text));
    else this.sendQueue.push(id);
  }

  // ---- bidi Chat -----------------------------------------------------------

  private messageFrame(clientMsgId: string, text: string): ChatRequest {
    return create(ChatRequestSchema, {
      frame: { case: "message", value: { room: this.room, clientMsgId, text } },
    });
  }

  private async runBidi(): Promise<void> {
    const chat = this.ctx.client(ChatService, { bidi: true });
    let failures = 0;
    let refreshed = false;
    while (!this.leaving) {
      const outbox = new Channel<ChatRequest>();
      outbox.push(
        create(ChatRequestSchema, {
          frame: { case: "join", value: { room: this.room, afterId: this.lastId } },
        }),
      );
      for (const [id, text] of this.pending) outbox.push(this.messageFrame(id, text));
      this.outbox = outbox;
      const abort = new AbortController();
      this.streamAbort = abort;
      let received = false;
      try {
        for await (const res of chat.chat(outbox, this.ctx.callOptions({ signal: abort.signal }))) {
          received = true;
          failures = 0;
          this.onJoined();
          this.handleFrame(res);
        }
        if (this.leaving) return;
        throw new ConnectError("the server ended the chat stream", Code.Unavailable);
      } catch (error) {
        if (this.leaving) return;
        if (!(await this.recover(error, received, refreshed, failures))) throw error;
        if (!received && shouldRefresh(toRpcError(error))) refreshed = true;
        else failures++;
      } finally {
        this.outbox = undefined;
        outbox.end();
      }
    }
  }

  /**
   * After a stream failed: refresh once on TOKEN_EXPIRED at stream start, or
   * wait and reconnect on a retryable error. False: give up.
   */
  private async recover(
    error: unknown,
    received: boolean,
    refreshed: boolean,
    failures: number,
  ): Promise<boolean> {
    if (findCliError(error) instanceof AuthRequiredError) return false;
    const rpc = toRpcError(error);
    if (!received && !refreshed && shouldRefresh(rpc) && this.ctx.session.canRefresh) {
      await this.ctx.session.refresh(await this.ctx.session.accessToken());
      return true;
    }
    if (!isRetryable(error) || failures >= this.options.maxRetries) return false;
    const delay = backoffMs(failures, rpc.retryDelayMs);
    this.ctx.output.notice(
      `chat: connection lost (${describeError(error).summary}); reconnecting in ${(delay / 1000).toFixed(1)} s`,
      { reconnectInMs: delay, afterId: this.lastId.toString() },
    );
    await pause(delay);
    return true;
  }

  private handleFrame(res: ChatResponse): void {
    const frame = res.frame;
    switch (frame.case) {
      case "event":
        this.handleEvent(frame.value, res);
        break;
      case "ack":
        if (this.ctx.output.json) this.print("", res);
        this.pending.delete(frame.value.clientMsgId);
        this.changed();
        break;
      case "error": {
        const e = frame.value;
        const text = this.pending.get(e.clientMsgId);
        if (e.code === Code.ResourceExhausted && text !== undefined && e.retryAfterMs > 0n) {
          setTimeout(() => {
            if (this.pending.has(e.clientMsgId)) {
              this.outbox?.push(this.messageFrame(e.clientMsgId, text));
            }
          }, Number(e.retryAfterMs)).unref();
          break;
        }
        this.refuse(e.code, e.message, text, res);
        if (e.clientMsgId) this.pending.delete(e.clientMsgId);
        this.changed();
        break;
      }
      default:
        break;
    }
  }

  private refuse(code: number, message: string, text: string | undefined, res: ChatResponse) {
    this.refused++;
    this.firstRefusedCode ??= code;
    if (this.ctx.output.json) this.print("", res);
    else {
      const what =
        text === undefined ? "" : ` "${text.length > 40 ? `${text.slice(0, 40)}…` : text}"`;
      this.ctx.output.warn(`message${what} refused: ${message}`);
    }
  }

  // ---- Subscribe + Send ------------------------------------------------------

  private async runSubscribe(): Promise<void> {
    const chat = this.ctx.client(ChatService);
    let failures = 0;
    let refreshed = false;
    while (!this.leaving) {
      const abort = new AbortController();
      this.streamAbort = abort;
      let received = false;
      try {
        const stream = chat.subscribe(
          { room: this.room, afterId: this.lastId },
          this.ctx.callOptions({ signal: abort.signal }),
        );
        for await (const res of stream) {
          received = true;
          failures = 0;
          this.onJoined();
          if (res.event) {
            this.handleEvent(
              res.event,
              create(ChatResponseSchema, { frame: { case: "event", value: res.event } }),
            );
          }
        }
        if (this.leaving) return;
        throw new ConnectError("the server ended the subscription", Code.Unavailable);
      } catch (error) {
        if (this.leaving) return;
        if (!(await this.recover(error, received, refreshed, failures))) throw error;
        if (!received && shouldRefresh(toRpcError(error))) refreshed = true;
        else failures++;
      }
    }
  }

  private async runSender(): Promise<void> {
    const chat = this.ctx.client(ChatService);
    // Let the subscription start first, so our own messages come back to us.
    await Promise.race([this.joined, pause(3000)]);
    for await (const id of this.sendQueue) {
      const text = this.pending.get(id);
      if (text === undefined) continue;
      for (let attempt = 0; ; attempt++) {
        try {
          const { message } = await chat.send(
            { room: this.room, clientMsgId: id, text },
            this.ctx.callOptions(),
          );
          if (this.ctx.output.json) {
            this.print(
              "",
              create(ChatResponseSchema, {
                frame: { case: "ack", value: { clientMsgId: id, message } },
              }),
            );
          }
          break;
        } catch (error) {
          if (findCliError(error) instanceof AuthRequiredError) throw error;
          const rpc = toRpcError(error);
          if (isRetryable(error) && attempt < this.options.maxRetries) {
            await pause(backoffMs(attempt, rpc.retryDelayMs));
            continue;
          }
          if (rpc.kind === "unauthenticated" || rpc.kind === "permission") throw error;
          this.refuse(
            rpc.code,
            describeError(error).summary,
            text,
            create(ChatResponseSchema, {
              frame: {
                case: "error",
                value: { clientMsgId: id, room: this.room, code: rpc.code, message: rpc.message },
              },
            }),
          );
          break;
        }
      }
      this.pending.delete(id);
      this.changed();
    }
  }

  // ---- shared --------------------------------------------------------------

  private onJoined(): void {
    if (this.joinedOnce) return;
    this.joinedOnce = true;
    this.markJoined();
    const how = this.bidi ? "Chat stream" : "Subscribe + Send";
    this.ctx.output.notice(`chat: joined ${this.room} (${this.ctx.protocol}, ${how})`, {
      room: this.room,
    });
  }

  private handleEvent(event: RoomEvent, res: ChatResponse): void {
    const kind = event.kind;
    switch (kind.case) {
      case "message": {
        const m = kind.value;
        if (m.id <= this.lastId) return; // replayed after a reconnect: already shown
        this.lastId = m.id;
        const time = m.createTime ? timestampDate(m.createTime) : new Date();
        this.print(`[${time.toTimeString().slice(0, 8)}] ${m.senderUsername}: ${m.text}`, res);
        return;
      }
      case "userJoined":
        this.print(`* ${kind.value.username} joined ${event.room}`, res);
        return;
      case "userLeft":
        this.print(`* ${kind.value.username} left ${event.room}`, res);
        return;
      case "presence":
        this.print(
          `* in ${event.room}: ${kind.value.members.map((m) => m.username).join(", ") || "nobody"}`,
          res,
        );
        return;
      default:
        return;
    }
  }

  private print(human: string, res: ChatResponse): void {
    if (this.tty && this.rl && !this.ctx.output.json) {
      process.stdout.write(`\r\x1b[K${human}\n`);
      this.rl.prompt(true);
      return;
    }
    this.ctx.output.result(human, toJson(ChatResponseSchema, res));
  }

  /** Leaves the room: Leave + half-close (bidi), or cancels the subscription. */
  private leave(): void {
    if (this.leaving) return;
    this.leaving = true;
    this.endInput();
    this.changed();
    const abort = this.streamAbort;
    if (this.outbox) {
      this.outbox.push(
        create(ChatRequestSchema, { frame: { case: "leave", value: { room: this.room } } }),
      );
      this.outbox.end();
      setTimeout(() => abort?.abort(), LEAVE_GRACE_MS).unref();
    } else {
      abort?.abort();
    }
  }

  private changed(): void {
    for (const listener of [...this.stateChanged]) listener();
  }

  /** Resolves once `condition` holds (checked now and on every state change). */
  private until(condition: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (condition() || this.leaving) {
          this.stateChanged.delete(check);
          resolve();
        }
      };
      this.stateChanged.add(check);
      check();
    });
  }
}
