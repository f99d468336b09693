import { UserService, type WatchUsersResponse } from "../../../gen/switchboard/user/v1/user_pb.js";
import { ago, fullDate, millis } from "../format.js";
import { useServerStream } from "../hooks/use-server-stream.js";
import { Avatar } from "./avatar.js";
import { ErrorNotice } from "./error-notice.js";
import { StreamStatus } from "./stream-status.js";

export interface UserView {
  readonly id: string;
  readonly username: string;
  readonly displayName: string;
  readonly createdAt: number;
}

interface UserListState {
  /** In creation order. */
  readonly users: readonly UserView[];
  /** The last cursor seen: the next connection resumes after it. */
  readonly cursor: string;
}

export const USERS_KEY = ["switchboard", "watch-users"] as const;

function reduceUsers(state: UserListState, batch: readonly WatchUsersResponse[]): UserListState {
  const seen = new Set(state.users.map((u) => u.id));
  const users = [...state.users];
  let cursor = state.cursor;
  for (const item of batch) {
    cursor = item.cursor || cursor;
    const u = item.user;
    if (!u || seen.has(u.id)) continue;
    seen.add(u.id);
    users.push({
      id: u.id,
      username: u.username,
      displayName: u.displayName,
      createdAt: millis(u.createTime),
    });
  }
  return { users, cursor };
}

/** Everyone, in a live WatchUsers feed that resumes from its cursor after any drop. */
export function UserList({
  meId,
  onLookup,
}: {
  readonly meId: string | undefined;
  readonly onLookup: (id: string) => void;
}) {
  const stream = useServerStream({
    method: UserService.method.watchUsers,
    queryKey: USERS_KEY,
    initialState: (): UserListState => ({ users: [], cursor: "" }),
    request: (s) => ({ afterCursor: s.cursor }),
    reduce: reduceUsers,
  });
  const users = stream.data.users;
  const newestFirst = [...users].reverse();
  return (
    <section className="card panel" aria-labelledby="everyone-title">
      <div className="panel__header">
        <h2 id="everyone-title">
          Everyone <span className="count">{users.length}</span>
        </h2>
        <StreamStatus stream={stream} label="User list" />
      </div>
      {stream.status === "error" && stream.error && (
        <ErrorNotice error={stream.error} onRetry={stream.retryNow} compact />
      )}
      {users.length === 0 && stream.status !== "error" ? (
        <p className="empty">Loading people…</p>
      ) : (
        <ul className="user-list" aria-label="Everyone">
          {newestFirst.map((u) => (
            <li key={u.id} className="user-row">
              <Avatar name={u.displayName || u.username} seed={u.id} />
              <div className="user-row__text">
                <span className="user-row__name">
                  {u.displayName || u.username}
                  {u.id === meId && <span className="badge">you</span>}
                </span>
                <span className="user-row__meta">
                  @{u.username} ·{" "}
                  <time
                    dateTime={new Date(u.createdAt).toISOString()}
                    title={fullDate(u.createdAt)}
                  >
                    joined {ago(u.createdAt)}
                  </time>
                </span>
              </div>
              <button
                type="button"
                className="button button--ghost button--small"
                onClick={() => onLookup(u.id)}
                aria-label={`Add ${u.username} to lookup`}
              >
                Look up
              </button>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
