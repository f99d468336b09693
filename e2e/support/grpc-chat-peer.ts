import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import { loadProtoPackage } from "../../test/support/grpc-js-proto.js";

/**
 * An independent chat peer: @grpc/grpc-js with @grpc/proto-loader on the
 * bidi `ChatService/Chat` call, over HTTP/2 (h2c) to the same port the
 * browser uses. Messages use proto-loader's camelCase names; uint64 ids
 * are strings.
 */

export interface PeerMessage {
  id: string;
  room: string;
  senderId: string;
  senderUsername: string;
  text: string;
  clientMsgId: string;
}

interface RoomEvent {
  room: string;
  kind: "message" | "userJoined" | "userLeft" | "presence";
  message?: PeerMessage;
  presence?: { members: Array<{ userId: string; username: string }> };
}

interface ChatResponse {
  frame: "event" | "ack" | "error";
  event?: RoomEvent;
  ack?: { clientMsgId: string; message: PeerMessage };
  error?: { clientMsgId: string; room: string; code: number; message: string };
}

type ChatCall = grpc.ClientDuplexStream<unknown, ChatResponse>;

interface ChatServiceClient extends grpc.Client {
  Chat(metadata: grpc.Metadata): ChatCall;
}

let clientConstructor:
  | (new (
      address: string,
      creds: grpc.ChannelCredentials,
    ) => ChatServiceClient)
  | undefined;

function chatClientConstructor() {
  if (clientConstructor) return clientConstructor;
  const root = loadProtoPackage("switchboard/chat/v1/chat.proto") as unknown as {
    switchboard: { chat: { v1: { ChatService: typeof clientConstructor } } };
  };
  clientConstructor = root.switchboard.chat.v1.ChatService;
  return clientConstructor!;
}

export class GrpcChatPeer {
  readonly messages: PeerMessage[] = [];
  readonly events: RoomEvent[] = [];
  #waiters = new Set<() => void>();
  #acks = new Map<string, { resolve: (m: PeerMessage) => void; reject: (e: Error) => void }>();
  #ended: Error | undefined;

  private constructor(
    private readonly client: ChatServiceClient,
    private readonly call: ChatCall,
  ) {
    call.on("data", (res: ChatResponse) => {
      if (res.frame === "event" && res.event) {
        this.events.push(res.event);
        if (res.event.kind === "message" && res.event.message)
          this.messages.push(res.event.message);
      } else if (res.frame === "ack" && res.ack) {
        this.#acks.get(res.ack.clientMsgId)?.resolve(res.ack.message);
        this.#acks.delete(res.ack.clientMsgId);
      } else if (res.frame === "error" && res.error) {
        this.#acks.get(res.error.clientMsgId)?.reject(new Error(res.error.message));
        this.#acks.delete(res.error.clientMsgId);
      }
      this.#notify();
    });
    call.on("error", (err) => {
      this.#ended = err;
      this.#notify();
    });
    call.on("end", () => this.#notify());
  }

  /** Opens the bidi stream as the user of `accessToken`; `url` is http://host:port. */
  static open(url: string, accessToken: string): GrpcChatPeer {
    const Client = chatClientConstructor();
    const client = new Client(new URL(url).host, grpc.credentials.createInsecure());
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${accessToken}`);
    return new GrpcChatPeer(client, client.Chat(metadata));
  }

  #notify(): void {
    for (const w of this.#waiters) w();
  }

  /** Resolves when `check` holds (re-checked on every frame), or rejects after `timeoutMs`. */
  waitFor<T>(what: string, check: () => T | undefined, timeoutMs = 10_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const test = () => {
        const value = check();
        if (value !== undefined) {
          done();
          resolve(value);
        } else if (this.#ended) {
          done();
          reject(new Error(`chat stream ended while waiting for ${what}: ${this.#ended.message}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(test);
      };
      this.#waiters.add(test);
      test();
    });
  }

  /** Joins `room` and waits for its presence snapshot. */
  async join(room: string, afterId = "0"): Promise<void> {
    const before = this.events.length;
    this.call.write({ join: { room, afterId } });
    await this.waitFor(`presence in ${room}`, () =>
      this.events.slice(before).find((e) => e.room === room && e.kind === "presence"),
    );
  }

  /** Sends `text` and resolves with the stored message (the ack). */
  send(room: string, text: string): Promise<PeerMessage> {
    const clientMsgId = randomUUID();
    return new Promise((resolve, reject) => {
      this.#acks.set(clientMsgId, { resolve, reject });
      this.call.write({ message: { room, clientMsgId, text } });
    });
  }

  /** Waits for a message with `text` (from anyone, in any joined room). */
  waitForMessage(text: string, timeoutMs?: number): Promise<PeerMessage> {
    return this.waitFor(
      `message "${text}"`,
      () => this.messages.find((m) => m.text === text),
      timeoutMs,
    );
  }

  close(): void {
    this.call.end();
    this.call.cancel();
    this.client.close();
  }
}
