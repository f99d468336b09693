import { Fragment, useEffect, useLayoutEffect, useRef, useState } from "react";
import type { ChatState, MessageView, PendingMessage } from "../../chat/state.js";
import { describeError } from "../../errors.js";
import { clock, fullDate } from "../../format.js";
import { Avatar } from "../avatar.js";

/** Consecutive messages of one sender within this long share one header. */
const GROUP_MS = 5 * 60_000;

interface Props {
  readonly room: string;
  readonly chat: ChatState;
  readonly meId: string | undefined;
  readonly loadingOlder: boolean;
  readonly onLoadOlder: () => void;
  readonly onRetry: (clientMsgId: string) => void;
  readonly onDiscard: (clientMsgId: string) => void;
}

/**
 * The conversation: stored messages by id, then our pending ones, with
 * join/leave notices in between. Scrolling to the top loads older
 * messages (History before_id) and keeps the view where it was; new
 * messages scroll into view when the reader is at the bottom. Messages
 * from others are announced politely to screen readers.
 */
export function MessageList({
  room,
  chat,
  meId,
  loadingOlder,
  onLoadOlder,
  onRetry,
  onDiscard,
}: Props) {
  const scroller = useRef<HTMLDivElement>(null);
  const sentinel = useRef<HTMLDivElement>(null);
  const atBottom = useRef(true);
  const anchor = useRef<{ oldest: bigint | undefined; fromBottom: number }>({
    oldest: undefined,
    fromBottom: 0,
  });
  const [showJump, setShowJump] = useState(false);
  const { messages, pending, notices } = chat;

  // Keep the reader's place when older messages are prepended; follow the
  // conversation when they are at the bottom.
  // biome-ignore lint/correctness/useExhaustiveDependencies: runs after every change of the rendered rows
  useLayoutEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const prev = anchor.current;
    const oldest = messages[0]?.id;
    if (prev.oldest !== undefined && oldest !== undefined && oldest < prev.oldest) {
      el.scrollTop = el.scrollHeight - prev.fromBottom;
    } else if (atBottom.current) {
      el.scrollTop = el.scrollHeight;
    } else {
      setShowJump(true);
    }
    anchor.current = { oldest, fromBottom: el.scrollHeight - el.scrollTop };
  }, [messages, pending, notices]);

  // Our own new message always scrolls into view.
  const pendingCount = pending.length;
  useLayoutEffect(() => {
    if (pendingCount > 0 && scroller.current) {
      scroller.current.scrollTop = scroller.current.scrollHeight;
      atBottom.current = true;
    }
  }, [pendingCount]);

  const onScroll = () => {
    const el = scroller.current;
    if (!el) return;
    atBottom.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
    if (atBottom.current) setShowJump(false);
    anchor.current = { oldest: messages[0]?.id, fromBottom: el.scrollHeight - el.scrollTop };
  };

  // Older history when the top comes into view.
  const canLoadOlder = chat.hasOlder === true && !loadingOlder;
  useEffect(() => {
    const el = sentinel.current;
    const root = scroller.current;
    if (!el || !root || !canLoadOlder) return;
    const observer = new IntersectionObserver(
      (entries) => {
        if (entries.some((e) => e.isIntersecting)) onLoadOlder();
      },
      { root, rootMargin: "200px 0px 0px 0px" },
    );
    observer.observe(el);
    return () => observer.disconnect();
  }, [canLoadOlder, onLoadOlder]);

  // Announce new messages from others (not history, not our own).
  const [announcement, setAnnouncement] = useState("");
  const announced = useRef<bigint | undefined>(undefined);
  const { initialized } = chat;
  useEffect(() => {
    if (!initialized) return;
    const lastId = messages.at(-1)?.id ?? 0n;
    // What the room had when we joined is history, not news.
    if (announced.current === undefined) {
      announced.current = lastId;
      return;
    }
    const since = announced.current;
    const fresh = messages.filter((m) => m.id > since && m.senderId !== meId);
    if (lastId > since) announced.current = lastId;
    if (fresh.length === 1) setAnnouncement(`${fresh[0]!.senderUsername}: ${fresh[0]!.text}`);
    else if (fresh.length > 1) setAnnouncement(`${fresh.length} new messages`);
  }, [messages, meId, initialized]);

  const noticesAfter = new Map<bigint, typeof notices>();
  for (const n of notices) {
    const list = noticesAfter.get(n.afterId) ?? [];
    noticesAfter.set(n.afterId, [...list, n]);
  }
  const renderNotices = (afterId: bigint) =>
    (noticesAfter.get(afterId) ?? []).map((n) => (
      <li key={n.key} className="chat-notice">
        {n.text}
      </li>
    ));

  const empty = messages.length === 0 && pending.length === 0;

  return (
    <div className="message-scroller" ref={scroller} onScroll={onScroll}>
      <div ref={sentinel} className="message-sentinel" />
      {chat.hasOlder && (
        <div className="load-older">
          <button
            type="button"
            className="link-button"
            onClick={onLoadOlder}
            disabled={loadingOlder}
          >
            {loadingOlder ? "Loading older messages…" : "Load older messages"}
          </button>
        </div>
      )}
      {chat.hasOlder === false && messages.length > 0 && (
        <p className="chat-start">This is the beginning of #{room}.</p>
      )}
      {/* The log itself is not live: history would be read out too. */}
      <ol className="messages" role="log" aria-live="off" aria-label={`Messages in #${room}`}>
        {renderNotices(0n)}
        {messages.map((m, i) => (
          <Fragment key={m.id.toString()}>
            <Message message={m} previous={messages[i - 1]} mine={m.senderId === meId} />
            {renderNotices(m.id)}
          </Fragment>
        ))}
        {pending.map((p) => (
          <PendingRow
            key={p.clientMsgId}
            pending={p}
            onRetry={() => onRetry(p.clientMsgId)}
            onDiscard={() => onDiscard(p.clientMsgId)}
          />
        ))}
      </ol>
      {empty && (
        <div className="chat-empty">
          <p>No messages in #{room} yet.</p>
          <p className="muted">Say hello — everyone here will see it instantly.</p>
        </div>
      )}
      <div className="sr-only" aria-live="polite" aria-atomic="true">
        {announcement}
      </div>
      {showJump && (
        <button
          type="button"
          className="jump-latest"
          onClick={() => {
            const el = scroller.current;
            if (el) el.scrollTop = el.scrollHeight;
            setShowJump(false);
          }}
        >
          New messages ↓
        </button>
      )}
    </div>
  );
}

function Message({
  message,
  previous,
  mine,
}: {
  readonly message: MessageView;
  readonly previous: MessageView | undefined;
  readonly mine: boolean;
}) {
  const grouped =
    previous !== undefined &&
    previous.senderId === message.senderId &&
    message.createdAt - previous.createdAt < GROUP_MS;
  return (
    <li
      className={`message${grouped ? " message--grouped" : ""}${mine ? " message--mine" : ""}`}
      data-id={message.id.toString()}
      data-state="sent"
    >
      {grouped ? (
        <span className="message__gutter" aria-hidden="true" />
      ) : (
        <Avatar name={message.senderUsername} seed={message.senderId} />
      )}
      <div className="message__body">
        <div className={grouped ? "sr-only" : "message__meta"}>
          <span className="message__author">{message.senderUsername}</span>{" "}
          <time
            className="message__time"
            dateTime={new Date(message.createdAt).toISOString()}
            title={fullDate(message.createdAt)}
          >
            {clock(message.createdAt)}
          </time>
        </div>
        <p className="message__text">{message.text}</p>
      </div>
    </li>
  );
}

function PendingRow({
  pending,
  onRetry,
  onDiscard,
}: {
  readonly pending: PendingMessage;
  readonly onRetry: () => void;
  readonly onDiscard: () => void;
}) {
  const failed = pending.state === "failed";
  return (
    <li
      className={`message message--mine message--pending${failed ? " message--failed" : ""}`}
      data-state={pending.state}
    >
      <span className="message__gutter" aria-hidden="true" />
      <div className="message__body">
        <p className="message__text">{pending.text}</p>
        <p className="message__status">
          {failed ? (
            <>
              <span>
                Not sent
                {pending.error?.kind === "unavailable"
                  ? " — Switchboard can't be reached."
                  : pending.error
                    ? ` — ${describeError(pending.error)}`
                    : "."}
              </span>{" "}
              <button type="button" className="link-button" onClick={onRetry}>
                Retry
              </button>{" "}
              <button type="button" className="link-button" onClick={onDiscard}>
                Discard
              </button>
            </>
          ) : (
            "Sending…"
          )}
        </p>
      </div>
    </li>
  );
}
