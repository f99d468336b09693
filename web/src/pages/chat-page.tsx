import { callUnaryMethod, useMutation, useQuery, useTransport } from "@connectrpc/connect-query";
import { useQueryClient } from "@tanstack/react-query";
import { useCallback, useEffect, useMemo, useState } from "react";
import { ChatService } from "../../../gen/switchboard/chat/v1/chat_pb.js";
import { useSession } from "../auth/use-session.js";
import {
  addPending,
  applyHistory,
  type ChatState,
  chatKey,
  emptyChat,
  mergeMessages,
  reduceEvents,
  removePending,
  toView,
  updatePending,
} from "../chat/state.js";
import { Composer } from "../components/chat/composer.js";
import { MemberList } from "../components/chat/member-list.js";
import { MessageList } from "../components/chat/message-list.js";
import { RoomPicker } from "../components/chat/room-picker.js";
import { ErrorNotice, useRetryUntil } from "../components/error-notice.js";
import { StreamStatus } from "../components/stream-status.js";
import { isRetryable, type RpcError, rpcError } from "../errors.js";
import { useCountdown } from "../hooks/use-countdown.js";
import { usePageHeading } from "../hooks/use-page-title.js";
import { backoffDelay, useServerStream } from "../hooks/use-server-stream.js";

const PAGE_SIZE = 50;

/**
 * One chat room: Subscribe (history replay, presence, live messages) plus
 * Send and History, since browsers cannot open the bidi Chat stream.
 */
export function ChatPage({ room }: { readonly room: string }) {
  const { user } = useSession();
  const transport = useTransport();
  const queryClient = useQueryClient();
  const key = chatKey(room);
  const heading = usePageHeading<HTMLHeadingElement>(`#${room}`);
  const [historyError, setHistoryError] = useState<RpcError | undefined>();
  const [loadingOlder, setLoadingOlder] = useState(false);

  const update = useCallback(
    (fn: (s: ChatState) => ChatState) =>
      queryClient.setQueryData<ChatState>(chatKey(room), (old) => fn(old ?? emptyChat())),
    [queryClient, room],
  );

  // Joining: the newest page first, then the live feed from its newest id.
  const initialized = queryClient.getQueryData<ChatState>(chatKey(room))?.initialized === true;
  const newest = useQuery(
    ChatService.method.history,
    { room, beforeId: 0n, pageSize: PAGE_SIZE },
    { enabled: !initialized, staleTime: 0, gcTime: 0 },
  );
  useEffect(() => {
    if (newest.data) update((s) => (s.initialized ? s : applyHistory(s, newest.data, true)));
  }, [newest.data, update]);

  const stream = useServerStream({
    method: ChatService.method.subscribe,
    queryKey: key,
    initialState: emptyChat,
    enabled: initialized || newest.isSuccess,
    request: (s) => ({ room, afterId: s.lastId }),
    reduce: reduceEvents,
  });
  const chat = stream.data;
  const joinError = useMemo(
    () => (newest.error && !chat.initialized ? rpcError(newest.error) : undefined),
    [newest.error, chat.initialized],
  );

  const loadOlder = useCallback(async () => {
    const state = queryClient.getQueryData<ChatState>(chatKey(room));
    if (!state || loadingOlder || state.hasOlder === false || state.oldestId === undefined) return;
    setLoadingOlder(true);
    try {
      const page = await callUnaryMethod(transport, ChatService.method.history, {
        room,
        beforeId: state.oldestId,
        pageSize: PAGE_SIZE,
      });
      setHistoryError(undefined);
      update((s) => applyHistory(s, page, false));
    } catch (err) {
      setHistoryError(rpcError(err));
    } finally {
      setLoadingOlder(false);
    }
  }, [queryClient, room, transport, update, loadingOlder]);

  const send = useMutation(ChatService.method.send, {
    // Send is idempotent per client_msg_id: retrying blindly is safe.
    retry: (count, err) => count < 8 && rpcError(err).kind === "unavailable",
    retryDelay: (count) => backoffDelay(count + 1, 500, 8000),
    onSuccess: (res) => {
      if (res.message) update((s) => mergeMessages(s, [toView(res.message!)]));
    },
    onError: (err, vars) => {
      const e = rpcError(err);
      update((s) => updatePending(s, vars.clientMsgId ?? "", { state: "failed", error: e }));
    },
  });
  const [sendError, setSendError] = useState<RpcError | undefined>();

  const submit = useCallback(
    (text: string) => {
      const clientMsgId = crypto.randomUUID();
      update((s) => addPending(s, { clientMsgId, text, createdAt: Date.now(), state: "sending" }));
      setSendError(undefined);
      send.mutate({ room, clientMsgId, text }, { onError: (err) => setSendError(rpcError(err)) });
    },
    [room, send, update],
  );

  const retry = useCallback(
    (clientMsgId: string) => {
      const p = queryClient
        .getQueryData<ChatState>(chatKey(room))
        ?.pending.find((x) => x.clientMsgId === clientMsgId);
      if (!p) return;
      update((s) => updatePending(s, clientMsgId, { state: "sending", error: undefined }));
      setSendError(undefined);
      send.mutate(
        { room, clientMsgId, text: p.text },
        { onError: (err) => setSendError(rpcError(err)) },
      );
    },
    [queryClient, room, send, update],
  );

  const discard = useCallback(
    (clientMsgId: string) => update((s) => removePending(s, clientMsgId)),
    [update],
  );

  // A room switch starts fresh: no stale send error from another room.
  // biome-ignore lint/correctness/useExhaustiveDependencies: reset on room change only
  useEffect(() => {
    setSendError(undefined);
    setHistoryError(undefined);
  }, [room]);

  const blocked = useCountdown(useRetryUntil(sendError)) > 0;

  return (
    <main className="page chat-page" id="main">
      <header className="page__header chat-page__header">
        <div>
          <h1 ref={heading} tabIndex={-1}>
            <span className="hash" aria-hidden="true">
              #
            </span>
            {room}
            <span className="sr-only"> chat room</span>
          </h1>
          <StreamStatus stream={stream} label="Chat" />
        </div>
        <RoomPicker current={room} />
      </header>
      <div className="chat-layout">
        <section className="card chat-main" aria-label={`Conversation in #${room}`}>
          {stream.status === "error" && stream.error && (
            <ErrorNotice error={stream.error} onRetry={stream.retryNow} compact />
          )}
          {joinError && (
            <ErrorNotice
              error={joinError}
              message={
                joinError.kind === "unavailable" ? `Couldn't load #${room}. Retrying…` : undefined
              }
              onRetry={() => void newest.refetch()}
              compact
            />
          )}
          {historyError && (
            <ErrorNotice
              error={historyError}
              message={
                isRetryable(historyError) && historyError.kind !== "rate_limited"
                  ? "Couldn't load earlier messages."
                  : undefined
              }
              onRetry={() => {
                setHistoryError(undefined);
                void loadOlder();
              }}
              compact
            />
          )}
          <MessageList
            room={room}
            chat={chat}
            meId={user?.id}
            loadingOlder={loadingOlder}
            onLoadOlder={loadOlder}
            onRetry={retry}
            onDiscard={discard}
          />
          {sendError && sendError.kind !== "unavailable" && (
            <ErrorNotice error={sendError} compact />
          )}
          <Composer room={room} onSend={submit} blocked={blocked} />
        </section>
        <MemberList members={chat.members} meId={user?.id} />
      </div>
    </main>
  );
}
