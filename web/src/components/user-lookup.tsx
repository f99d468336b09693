import { type FormEvent, useCallback, useId, useState } from "react";
import {
  type GetUserStreamResponse,
  UserService,
} from "../../../gen/switchboard/user/v1/user_pb.js";
import { sentence } from "../errors.js";
import { fullDate, millis } from "../format.js";
import { useServerStream } from "../hooks/use-server-stream.js";
import { Avatar } from "./avatar.js";
import { ErrorNotice } from "./error-notice.js";
import type { UserView } from "./user-list.js";

interface LookupItem {
  readonly id: string;
  readonly user?: UserView;
  /** Why there is no user (NOT_FOUND for an unknown id). */
  readonly missing?: { readonly code: number; readonly message: string };
}

interface LookupState {
  readonly items: readonly LookupItem[];
}

/** The lookup's text box and the ids of the last submitted lookup. */
export function useLookupIds() {
  const [text, setText] = useState("");
  const [submitted, setSubmitted] = useState<{ seq: number; ids: string[] } | undefined>();
  const add = useCallback((id: string) => {
    setText((t) => {
      const ids = parseIds(t);
      return ids.includes(id) ? t : [...ids, id].join("\n");
    });
  }, []);
  const submit = useCallback(() => {
    setSubmitted((s) => ({ seq: (s?.seq ?? 0) + 1, ids: parseIds(text) }));
  }, [text]);
  return { text, setText, submitted, add, submit };
}

function parseIds(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

function reduceLookup(state: LookupState, batch: readonly GetUserStreamResponse[]): LookupState {
  const items = [...state.items];
  for (const item of batch) {
    if (item.result.case === "user") {
      const u = item.result.value;
      items.push({
        id: item.id,
        user: {
          id: u.id,
          username: u.username,
          displayName: u.displayName,
          createdAt: millis(u.createTime),
        },
      });
    } else {
      const status = item.result.value;
      items.push({
        id: item.id,
        missing: { code: status?.code ?? 5, message: status?.message ?? "" },
      });
    }
  }
  return { items };
}

/** Several users by id, over GetUserStream: rows appear one by one as the server sends them. */
export function UserLookup({ state }: { readonly state: ReturnType<typeof useLookupIds> }) {
  const { text, setText, submitted, submit } = state;
  const ids = submitted?.ids ?? [];
  const inputId = useId();
  const stream = useServerStream({
    method: UserService.method.getUserStream,
    queryKey: ["switchboard", "lookup", submitted?.seq ?? 0, ids],
    enabled: ids.length > 0,
    finite: true,
    initialState: (): LookupState => ({ items: [] }),
    // After a dropped connection, ask only for the ids not answered yet.
    request: (s) => ({ ids: ids.slice(s.items.length) }),
    reduce: reduceLookup,
  });
  const items = stream.data.items;
  const idErrors = stream.error
    ? Object.entries(stream.error.fieldViolations).map(([field, v]) => {
        const m = /^ids\[(\d+)\]$/.exec(field);
        const id = m ? ids[Number(m[1])] : undefined;
        return sentence(`${id ? `Id "${id}"` : "Ids"} ${v.join(", ")}`);
      })
    : [];
  const busy = stream.status === "connecting" || stream.status === "live";

  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    submit();
  };

  return (
    <section className="card panel" aria-labelledby="lookup-title">
      <div className="panel__header">
        <h2 id="lookup-title">Look up by id</h2>
      </div>
      <form onSubmit={onSubmit} className="lookup-form">
        <label htmlFor={inputId}>User ids</label>
        <textarea
          id={inputId}
          rows={3}
          value={text}
          spellCheck={false}
          placeholder="One id per line"
          aria-describedby={`${inputId}-hint`}
          aria-invalid={idErrors.length > 0 || undefined}
          onChange={(e) => setText(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
              e.preventDefault();
              submit();
            }
          }}
        />
        <p className="field__hint" id={`${inputId}-hint`}>
          Paste ids, or use “Look up” next to a person. Ctrl+Enter looks them up.
        </p>
        {idErrors.length > 0 && <p className="field__error">{idErrors.join(" ")}</p>}
        <button
          type="submit"
          className="button button--primary"
          disabled={parseIds(text).length === 0 || busy}
        >
          {busy ? "Looking up…" : "Look up"}
        </button>
      </form>
      {stream.error && idErrors.length === 0 && stream.status !== "done" && (
        <ErrorNotice error={stream.error} onRetry={stream.retryNow} compact />
      )}
      {ids.length > 0 && (
        <>
          <p className="muted lookup-progress" aria-live="polite">
            {busy || stream.status === "reconnecting"
              ? `Found ${items.length} of ${ids.length}…`
              : stream.status === "done"
                ? `${items.filter((i) => i.user).length} of ${ids.length} found.`
                : ""}
          </p>
          <ol className="lookup-results" aria-label="Lookup results">
            {items.map((item, index) => (
              <li
                // Ids may repeat; their position is their identity here.
                // biome-ignore lint/suspicious/noArrayIndexKey: see above
                key={index}
                className={`user-row${item.missing ? " user-row--missing" : ""}`}
              >
                {item.user ? (
                  <>
                    <Avatar
                      name={item.user.displayName || item.user.username}
                      seed={item.user.id}
                    />
                    <div className="user-row__text">
                      <span className="user-row__name">
                        {item.user.displayName || item.user.username}
                      </span>
                      <span className="user-row__meta">
                        @{item.user.username} · joined {fullDate(item.user.createdAt)}
                      </span>
                      <code className="user-row__id">{item.id}</code>
                    </div>
                  </>
                ) : (
                  <>
                    <span className="avatar avatar--md avatar--missing" aria-hidden="true">
                      ?
                    </span>
                    <div className="user-row__text">
                      <span className="user-row__name">Not found</span>
                      <code className="user-row__id">{item.id}</code>
                    </div>
                  </>
                )}
              </li>
            ))}
          </ol>
        </>
      )}
    </section>
  );
}
