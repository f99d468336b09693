import type {
  ChatMessage,
  Member,
  SubscribeResponse,
} from "../../../gen/switchboard/chat/v1/chat_pb.js";
import type { RpcError } from "../errors.js";
import { millis } from "../format.js";

/**
 * A chat room as the page shows it, kept in TanStack Query's cache under
 * `chatKey(room)` and updated by the Subscribe stream, History pages and
 * Send. Pure functions only; ids are bigints (uint64 on the wire).
 *
 * No gap, no duplicate:
 * - Joining loads the newest History page first (`initialized`), then
 *   subscribes with `after_id` = its newest id, so the server replays
 *   whatever was stored in between (an empty room subscribes with 0, which
 *   replays the room from its first message).
 * - `lastId` is the resume point: the highest id known to be followed by
 *   nothing we have missed. It moves with Subscribe messages (which come in
 *   id order, with no gap) and with the NEWEST History page, never with
 *   Send responses (our own message may be stored after others we have not
 *   received yet). Reconnects subscribe with `after_id = lastId`.
 * - Messages are merged by id; a pending message of ours is replaced by the
 *   stored one with the same client_msg_id, whichever source brings it first.
 */

export interface MessageView {
  readonly id: bigint;
  readonly senderId: string;
  readonly senderUsername: string;
  readonly text: string;
  readonly clientMsgId: string;
  readonly createdAt: number;
}

export interface PendingMessage {
  readonly clientMsgId: string;
  readonly text: string;
  readonly createdAt: number;
  readonly state: "sending" | "failed";
  readonly error?: RpcError;
}

/** "ada joined" / "ada left", placed after the message it followed. */
export interface PresenceNotice {
  readonly key: string;
  readonly afterId: bigint;
  readonly text: string;
}

export interface ChatState {
  readonly messages: readonly MessageView[];
  readonly lastId: bigint;
  /** The oldest loaded message id (older pages load before it). */
  readonly oldestId: bigint | undefined;
  /** Whether History said older messages exist; undefined before the first page. */
  readonly hasOlder: boolean | undefined;
  readonly members: readonly Member[];
  readonly pending: readonly PendingMessage[];
  readonly notices: readonly PresenceNotice[];
  /** The newest History page is in: the subscription may start. */
  readonly initialized: boolean;
  /** Members before a reconnect: their re-joins are not announced for a while. */
  readonly returning: { readonly ids: readonly string[]; readonly until: number };
  /** Subscription snapshots seen (the first one is the join). */
  readonly snapshots: number;
}

export const chatKey = (room: string) => ["switchboard", "chat", room] as const;

export function emptyChat(): ChatState {
  return {
    messages: [],
    lastId: 0n,
    oldestId: undefined,
    hasOlder: undefined,
    members: [],
    pending: [],
    notices: [],
    initialized: false,
    returning: { ids: [], until: 0 },
    snapshots: 0,
  };
}

export function toView(m: ChatMessage): MessageView {
  return {
    id: m.id,
    senderId: m.senderId,
    senderUsername: m.senderUsername,
    text: m.text,
    clientMsgId: m.clientMsgId,
    createdAt: millis(m.createTime),
  };
}

/** Adds stored messages (any order, any overlap); drops pending ones they confirm. */
export function mergeMessages(state: ChatState, incoming: readonly MessageView[]): ChatState {
  if (incoming.length === 0) return state;
  const byId = new Map(state.messages.map((m) => [m.id, m]));
  for (const m of incoming) byId.set(m.id, m);
  const messages = [...byId.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const confirmed = new Set(incoming.map((m) => m.clientMsgId));
  const pending = state.pending.filter((p) => !confirmed.has(p.clientMsgId));
  const oldest = messages[0]?.id;
  return {
    ...state,
    messages,
    pending: pending.length === state.pending.length ? state.pending : pending,
    oldestId: oldest,
  };
}

const MAX_NOTICES = 100;
const RETURN_GRACE_MS = 30_000;

function addNotice(state: ChatState, text: string): ChatState {
  const afterId = state.messages.at(-1)?.id ?? 0n;
  const notice = { key: `${Date.now()}-${state.notices.length}-${text}`, afterId, text };
  return { ...state, notices: [...state.notices, notice].slice(-MAX_NOTICES) };
}

/** Folds Subscribe events (in order) into the room. */
export function reduceEvents(state: ChatState, batch: readonly SubscribeResponse[]): ChatState {
  let s = state;
  let fresh: MessageView[] = [];
  const flush = () => {
    if (fresh.length === 0) return;
    s = mergeMessages(s, fresh);
    fresh = [];
  };
  for (const item of batch) {
    const kind = item.event?.kind;
    if (!kind) continue;
    switch (kind.case) {
      case "message": {
        fresh.push(toView(kind.value));
        if (kind.value.id > s.lastId) s = { ...s, lastId: kind.value.id };
        break;
      }
      case "presence": {
        flush();
        const previous = s.members.map((m) => m.userId);
        s = {
          ...s,
          members: sortMembers(kind.value.members),
          snapshots: s.snapshots + 1,
          returning:
            s.snapshots > 0
              ? { ids: previous, until: Date.now() + RETURN_GRACE_MS }
              : { ids: [], until: 0 },
        };
        break;
      }
      case "userJoined": {
        flush();
        const m = kind.value;
        if (s.members.some((x) => x.userId === m.userId)) break;
        const back = s.returning.until > Date.now() && s.returning.ids.includes(m.userId);
        s = { ...s, members: sortMembers([...s.members, m]) };
        if (!back) s = addNotice(s, `${m.username} joined`);
        break;
      }
      case "userLeft": {
        flush();
        const m = kind.value;
        if (!s.members.some((x) => x.userId === m.userId)) break;
        s = { ...s, members: s.members.filter((x) => x.userId !== m.userId) };
        s = addNotice(s, `${m.username} left`);
        break;
      }
    }
  }
  flush();
  return s;
}

function sortMembers(members: readonly Member[]): Member[] {
  return [...members].sort((a, b) => a.username.localeCompare(b.username));
}

/** Merges a History page. `newest`: the page ending at the room's newest message. */
export function applyHistory(
  state: ChatState,
  page: { readonly messages: readonly ChatMessage[]; readonly hasMore: boolean },
  newest: boolean,
): ChatState {
  const views = page.messages.map(toView);
  const before = state.oldestId;
  let s = mergeMessages(state, views);
  const pageMax = views.at(-1)?.id ?? 0n;
  if (newest) s = { ...s, initialized: true, lastId: pageMax > s.lastId ? pageMax : s.lastId };
  const pageMin = views[0]?.id;
  // The oldest page so far decides whether more exist.
  if (before === undefined || (pageMin !== undefined && pageMin < before) || !newest) {
    s = { ...s, hasOlder: page.hasMore };
  } else if (s.hasOlder === undefined) {
    s = { ...s, hasOlder: page.hasMore };
  }
  return s;
}

export function addPending(state: ChatState, p: PendingMessage): ChatState {
  return { ...state, pending: [...state.pending, p] };
}

export function updatePending(
  state: ChatState,
  clientMsgId: string,
  patch: Partial<PendingMessage>,
): ChatState {
  return {
    ...state,
    pending: state.pending.map((p) => (p.clientMsgId === clientMsgId ? { ...p, ...patch } : p)),
  };
}

export function removePending(state: ChatState, clientMsgId: string): ChatState {
  return { ...state, pending: state.pending.filter((p) => p.clientMsgId !== clientMsgId) };
}
