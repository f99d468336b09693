import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { durationMs, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { RetryInfoSchema } from "../../../gen/google/rpc/error_details_pb.js";
import {
  type ChatMessage,
  ChatMessageSchema,
  type ChatRequest,
  type ChatResponse,
  ChatResponseSchema,
  type ChatService,
  FrameErrorSchema,
  type Join,
  type Leave,
  MemberSchema,
  PresenceSchema,
  type RoomEvent,
  RoomEventSchema,
  SendAckSchema,
  type SendMessage,
  type SubscribeResponse,
  SubscribeResponseSchema,
} from "../../../gen/switchboard/chat/v1/chat_pb.js";
import type { ChatLimiter } from "../chat/chat-limiter.js";
import { ChatReason, hasReason, subscriberTooSlow } from "../chat/errors.js";
import { EventQueue } from "../chat/event-queue.js";
import type { ChatHub, HubEvent } from "../chat/hub.js";
import type { Member } from "../chat/presence.js";
import { type AuthInfo, kAuth } from "../context.js";
import { type FieldViolation, Reason, unauthenticated } from "../errors.js";
import type { ChatMessageRecord, Store } from "../storage/store.js";
import * as rules from "../validation/chat-rules.js";
import { violations } from "../validation/validate.js";

/** What the ChatService needs; tests hand in real in-memory ones. */
export interface ChatServiceDeps {
  readonly store: Store;
  readonly hub: ChatHub;
  readonly logger: Logger;
  /** Counts each message sent (Send and Chat message frames); throws the typed ResourceExhausted. */
  readonly chatLimiter: ChatLimiter;
  readonly clock?: () => Date;
  /** Presence connection ids (one per subscription); default random UUIDs. */
  readonly newConnectionId?: () => string;
  /**
   * Frames a Chat stream may have queued and unread (events, acks, frame
   * errors) before it is ended with SUBSCRIBER_TOO_SLOW; default the hub's
   * `subscriberBuffer` (config `chat.subscriberBuffer`).
   */
  readonly streamBuffer?: number;
  /** Rooms one Chat stream may have joined at once; default 32. */
  readonly maxRoomsPerStream?: number;
}

/** Converts a stored message to the API's ChatMessage. */
export function toChatMessage(record: ChatMessageRecord): ChatMessage {
  return create(ChatMessageSchema, {
    id: BigInt(record.id),
    room: record.room,
    senderId: record.senderId,
    senderUsername: record.senderUsername,
    text: record.text,
    clientMsgId: record.clientMsgId,
    createTime: timestampFromDate(record.createTime),
  });
}

/** Converts a hub event to the API's RoomEvent. */
export function toRoomEvent(event: HubEvent): RoomEvent {
  const member = (m: Member) => create(MemberSchema, { userId: m.userId, username: m.username });
  switch (event.kind) {
    case "message":
      return create(RoomEventSchema, {
        room: event.room,
        kind: { case: "message", value: toChatMessage(event.message) },
      });
    case "joined":
      return create(RoomEventSchema, {
        room: event.room,
        kind: { case: "userJoined", value: member(event.member) },
      });
    case "left":
      return create(RoomEventSchema, {
        room: event.room,
        kind: { case: "userLeft", value: member(event.member) },
      });
    case "presence":
      return create(RoomEventSchema, {
        room: event.room,
        kind: {
          case: "presence",
          value: create(PresenceSchema, { members: event.members.map(member) }),
        },
      });
  }
}

/**
 * The SubscribeResponse of a hub event, made once per event: the hub hands
 * the same event object to every subscriber of the room, so one response
 * serves them all. It is frozen, being shared, which also lets the gRPC
 * stream fast path serialize it once for every stream it goes to.
 */
const subscribeResponses = new WeakMap<HubEvent, SubscribeResponse>();

function subscribeResponse(event: HubEvent): SubscribeResponse {
  let response = subscribeResponses.get(event);
  if (response === undefined) {
    response = deepFreeze(create(SubscribeResponseSchema, { event: toRoomEvent(event) }));
    subscribeResponses.set(event, response);
  }
  return response;
}

/** Freezes `value` and every object under it (typed arrays cannot be frozen and are left). */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || Object.isFrozen(value)) return value;
  if (ArrayBuffer.isView(value)) return value;
  for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key]);
  return Object.freeze(value);
}

/** The caller from the verified access token (never from the payload). */
function callerOf(context: HandlerContext): AuthInfo {
  const auth = context.values.get(kAuth);
  if (!auth) throw unauthenticated(Reason.TOKEN_MISSING, "this call needs an access token");
  return auth;
}

/**
 * A cursor as the hub takes it. 0 (proto3's unset) means "after nothing":
 * every stored message is replayed. It cannot mean "live only", or a
 * subscriber cut off before any message of a room that was empty when it
 * subscribed (last_id 0) could not resume without a gap. Clients that want
 * only new messages pass the newest id they know (History with page_size 1).
 */
function cursor(afterId: bigint): number {
  return Number(afterId);
}

function summary(bad: readonly FieldViolation[]): string {
  return bad.map((v) => `${v.field}: ${v.description}`).join("; ");
}

/** Builds the ChatService implementation. */
export function createChatService(deps: ChatServiceDeps): ServiceImpl<typeof ChatService> {
  const { store, hub, logger, chatLimiter } = deps;
  const clock = deps.clock ?? (() => new Date());
  const newConnectionId = deps.newConnectionId ?? randomUUID;
  const streamBuffer = deps.streamBuffer ?? hub.subscriberBuffer;
  const maxRooms = deps.maxRoomsPerStream ?? 32;

  /** Rate limit, then store (idempotent) and fan out. */
  const sendAs = async (
    caller: AuthInfo,
    msg: { room: string; clientMsgId: string; text: string },
    signal: AbortSignal,
  ): Promise<ChatMessageRecord> => {
    // Every attempt counts, retries included: without a lookup by client id
    // a retry cannot be told from a new message before it is stored.
    await chatLimiter(caller.userId);
    const { message } = await hub.append(
      {
        room: msg.room,
        senderId: caller.userId,
        senderUsername: caller.username,
        text: msg.text,
        clientMsgId: msg.clientMsgId,
        createTime: clock(),
      },
      { signal },
    );
    return message;
  };

  return {
    // Unary and server-stream requests arrive validated by the validation
    // interceptor (validation/request-rules.ts); only Chat frames are
    // validated here, one by one.
    async *subscribe(req, context) {
      const caller = callerOf(context);
      const { room, afterId } = req;
      const events = hub.subscribe(room, {
        afterId: cursor(afterId),
        member: { userId: caller.userId, username: caller.username },
        signal: context.signal,
        connectionId: newConnectionId(),
      });
      for await (const event of events) yield subscribeResponse(event);
    },

    async send(req, context) {
      const caller = callerOf(context);
      const msg = req;
      const message = await sendAs(caller, msg, context.signal);
      return { message: toChatMessage(message) };
    },

    async history(req, context) {
      callerOf(context);
      const { room, beforeId, pageSize } = req;
      const size = pageSize === 0 ? rules.DEFAULT_PAGE_SIZE : pageSize;
      // One more than asked tells whether older messages exist.
      const rows = await store.listMessagesBefore(room, Number(beforeId), size + 1, {
        signal: context.signal,
      });
      const hasMore = rows.length > size;
      return {
        messages: (hasMore ? rows.slice(rows.length - size) : rows).map(toChatMessage),
        hasMore,
      };
    },

    async *chat(requests, context) {
      const caller = callerOf(context);
      const session = new ChatSession({
        hub,
        logger,
        caller,
        callSignal: context.signal,
        streamBuffer,
        maxRooms,
        newConnectionId,
        send: sendAs,
      });
      session.start(requests);
      try {
        for (;;) {
          const next = await session.out.next();
          if (next.done) return;
          session.given(next.value);
          yield next.value;
        }
      } finally {
        session.stop();
      }
    },
  };
}

interface SessionOptions {
  readonly hub: ChatHub;
  readonly logger: Logger;
  readonly caller: AuthInfo;
  readonly callSignal: AbortSignal;
  readonly streamBuffer: number;
  readonly maxRooms: number;
  readonly newConnectionId: () => string;
  readonly send: (
    caller: AuthInfo,
    msg: { room: string; clientMsgId: string; text: string },
    signal: AbortSignal,
  ) => Promise<ChatMessageRecord>;
}

/** A room joined on a Chat stream. */
interface JoinedRoom {
  /** Aborted by Leave (or the end of the stream). */
  readonly controller: AbortController;
  /** Settles once the room's events stopped flowing into the output. */
  pipe: Promise<void>;
}

/**
 * One bidi Chat call. A reader task consumes the client's frames in order
 * (join, leave, message → validate, rate limit, store, ack) while the
 * response generator yields from `out`; the two never wait for each other.
 * Every room's events, every ack and every FrameError go through `out`,
 * which is bounded: a client that stops reading is ended with
 * SUBSCRIBER_TOO_SLOW instead of growing memory. When the client
 * half-closes, the session leaves its rooms and ends once everything
 * already queued (acks included) is written.
 */
class ChatSession {
  readonly out = new EventQueue<ChatResponse>();
  readonly #o: SessionOptions;
  readonly #member: Member;
  readonly #rooms = new Map<string, JoinedRoom>();
  /** Last message id written to the client, per room (for SUBSCRIBER_TOO_SLOW's metadata). */
  readonly #given = new Map<string, number>();
  readonly #stop = new AbortController();
  /** Aborted when the call ends for any reason. */
  readonly #signal: AbortSignal;

  constructor(options: SessionOptions) {
    this.#o = options;
    this.#member = { userId: options.caller.userId, username: options.caller.username };
    this.#signal = AbortSignal.any([options.callSignal, this.#stop.signal]);
    const onEnd = () => this.out.fail(ConnectError.from(this.#signal.reason));
    if (this.#signal.aborted) onEnd();
    else this.#signal.addEventListener("abort", onEnd, { once: true });
  }

  start(requests: AsyncIterable<ChatRequest>): void {
    void this.#read(requests);
  }

  /** The response generator wrote `res`. */
  given(res: ChatResponse): void {
    if (res.frame.case !== "event") return;
    const event = res.frame.value;
    if (event.kind.case === "message") this.#given.set(event.room, Number(event.kind.value.id));
  }

  /** The call is over: leave every room, stop reading. */
  stop(): void {
    this.#stop.abort(new ConnectError("chat stream ended", Code.Canceled));
  }

  async #read(requests: AsyncIterable<ChatRequest>): Promise<void> {
    try {
      for await (const req of requests) {
        if (this.#signal.aborted) return;
        await this.#handle(req);
      }
      if (this.#signal.aborted) return;
      // Half-close: leave every room, then end after what is queued.
      const pipes = [...this.#rooms.values()].map((room) => {
        room.controller.abort();
        return room.pipe;
      });
      this.#rooms.clear();
      await Promise.allSettled(pipes);
      this.out.close();
    } catch (err) {
      // The request stream broke (client reset, bad message, …); raw, so
      // that the error boundary turns a non-ConnectError into Internal.
      if (!this.#signal.aborted) this.#fail(err);
    }
  }

  async #handle(req: ChatRequest): Promise<void> {
    switch (req.frame.case) {
      case "join":
        return this.#join(req.frame.value);
      case "leave":
        return this.#leave(req.frame.value);
      case "message":
        return this.#send(req.frame.value);
      default:
        return this.#refuse({
          code: Code.InvalidArgument,
          message: "empty frame: set join, message or leave",
        });
    }
  }

  #join(join: Join): void {
    const bad = violations(rules.join, join);
    if (bad.length > 0) {
      this.#refuse({ room: join.room, code: Code.InvalidArgument, message: summary(bad) });
      return;
    }
    const { room } = join;
    if (this.#rooms.has(room)) {
      this.#refuse({
        room,
        code: Code.AlreadyExists,
        message: `room "${room}" is already joined on this stream`,
      });
      return;
    }
    if (this.#rooms.size >= this.#o.maxRooms) {
      this.#refuse({
        room,
        code: Code.ResourceExhausted,
        message: `at most ${this.#o.maxRooms} rooms can be joined on one stream`,
      });
      return;
    }
    const controller = new AbortController();
    const afterId = cursor(join.afterId);
    this.#given.delete(room);
    const events = this.#o.hub.subscribe(room, {
      afterId,
      member: this.#member,
      signal: AbortSignal.any([this.#signal, controller.signal]),
      connectionId: this.#o.newConnectionId(),
    });
    const joined: JoinedRoom = { controller, pipe: Promise.resolve() };
    this.#rooms.set(room, joined);
    joined.pipe = this.#pipe(room, events, joined);
  }

  #leave(leave: Leave): void {
    const bad = violations(rules.leave, leave);
    if (bad.length > 0) {
      this.#refuse({ room: leave.room, code: Code.InvalidArgument, message: summary(bad) });
      return;
    }
    const joined = this.#rooms.get(leave.room);
    if (!joined) {
      this.#refuse({
        room: leave.room,
        code: Code.FailedPrecondition,
        message: `room "${leave.room}" is not joined on this stream`,
      });
      return;
    }
    this.#rooms.delete(leave.room);
    joined.controller.abort();
  }

  async #send(msg: SendMessage): Promise<void> {
    const { room, clientMsgId } = msg;
    const bad = violations(rules.sendMessage, msg);
    if (bad.length > 0) {
      return this.#refuse({ clientMsgId, room, code: Code.InvalidArgument, message: summary(bad) });
    }
    if (!this.#rooms.has(room)) {
      return this.#refuse({
        clientMsgId,
        room,
        code: Code.FailedPrecondition,
        message: `join room "${room}" on this stream before sending to it`,
      });
    }
    try {
      const message = await this.#o.send(this.#o.caller, msg, this.#signal);
      this.#enqueue(
        create(ChatResponseSchema, {
          frame: {
            case: "ack",
            value: create(SendAckSchema, { clientMsgId, message: toChatMessage(message) }),
          },
        }),
      );
    } catch (err) {
      if (this.#signal.aborted) return;
      this.#refuseWith(err, room, clientMsgId);
    }
  }

  /** Moves one room's events into the output until the room is left or fails. */
  async #pipe(room: string, events: AsyncIterable<HubEvent>, joined: JoinedRoom): Promise<void> {
    try {
      for await (const event of events) {
        // The subscription's effective cursor: the resume point until a
        // message of the room is written.
        if (event.kind === "presence" && event.afterId !== undefined && !this.#given.has(room)) {
          this.#given.set(room, event.afterId);
        }
        this.#enqueue(
          create(ChatResponseSchema, { frame: { case: "event", value: toRoomEvent(event) } }),
        );
      }
    } catch (err) {
      if (joined.controller.signal.aborted || this.#signal.aborted) return;
      if (this.#rooms.get(room) === joined) this.#rooms.delete(room);
      if (
        err instanceof ConnectError &&
        (err.code === Code.Unavailable || hasReason(err, ChatReason.SUBSCRIBER_TOO_SLOW))
      ) {
        // Shutdown, or the store is away: the client reconnects and rejoins.
        this.#fail(err);
        return;
      }
      // The room alone failed (e.g. a store error during catch-up): the
      // client may join it again; the other rooms go on.
      this.#refuseWith(err, room, "");
    }
  }

  /** Queues a frame for the client, or ends the call if the client is too far behind. */
  #enqueue(res: ChatResponse): void {
    if (this.out.ended) return;
    if (this.out.size >= this.#o.streamBuffer) {
      const metadata: Record<string, string> = {};
      for (const [room, id] of this.#given) {
        if (this.#rooms.has(room)) metadata[`last_id_${room}`] = String(id);
      }
      const [only] = this.#rooms.keys();
      if (this.#rooms.size === 1 && only !== undefined && this.#given.has(only)) {
        metadata.last_id = String(this.#given.get(only));
      }
      this.#fail(subscriberTooSlow(metadata));
      return;
    }
    this.out.push(res);
  }

  #refuse(fields: {
    clientMsgId?: string;
    room?: string;
    code: Code;
    message: string;
    retryAfterMs?: number;
  }): void {
    this.#enqueue(
      create(ChatResponseSchema, {
        frame: {
          case: "error",
          value: create(FrameErrorSchema, {
            clientMsgId: fields.clientMsgId ?? "",
            room: fields.room ?? "",
            // google.rpc.Code and connect's Code share their numbering.
            code: fields.code,
            message: fields.message,
            retryAfterMs: BigInt(Math.max(0, Math.ceil(fields.retryAfterMs ?? 0))),
          }),
        },
      }),
    );
  }

  /** A FrameError from a thrown error; anything unexpected is logged and says only "internal error". */
  #refuseWith(err: unknown, room: string, clientMsgId: string): void {
    const expected =
      err instanceof ConnectError && err.code !== Code.Internal && err.code !== Code.Unknown;
    if (!expected) {
      this.#o.logger.error({ err, room, userId: this.#o.caller.userId }, "chat frame failed");
      this.#refuse({ clientMsgId, room, code: Code.Internal, message: "internal error" });
      return;
    }
    const [retry] = err.findDetails(RetryInfoSchema);
    this.#refuse({
      clientMsgId,
      room,
      code: err.code,
      message: err.rawMessage,
      ...(retry?.retryDelay ? { retryAfterMs: durationMs(retry.retryDelay) } : {}),
    });
  }

  /** Ends the call with `err`: the output is dropped, every room left, reading stopped. */
  #fail(err: unknown): void {
    this.out.fail(err);
    this.#stop.abort(err);
  }
}
