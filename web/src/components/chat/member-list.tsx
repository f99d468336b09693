import { useEffect, useState } from "react";
import type { Member } from "../../../../gen/switchboard/chat/v1/chat_pb.js";
import { useMediaQuery } from "../../hooks/use-media-query.js";
import { Avatar } from "../avatar.js";

/** Who is in the room now (presence); collapsible on small screens. */
export function MemberList({
  members,
  meId,
}: {
  readonly members: readonly Member[];
  readonly meId: string | undefined;
}) {
  // Open beside the conversation; folded above it on small screens.
  const small = useMediaQuery("(max-width: 860px)");
  const [open, setOpen] = useState(!small);
  useEffect(() => setOpen(!small), [small]);
  return (
    <aside className="card chat-members" aria-labelledby="members-title">
      <details open={open} onToggle={(e) => setOpen(e.currentTarget.open)}>
        <summary>
          <h2 id="members-title">
            In this room <span className="count">{members.length}</span>
          </h2>
        </summary>
        <ul className="member-list" aria-label="Members">
          {members.map((m) => (
            <li key={m.userId} className="member">
              <Avatar name={m.username} seed={m.userId} size="sm" />
              <span className="member__name">{m.username}</span>
              {m.userId === meId && <span className="badge">you</span>}
              <span className="member__online" aria-hidden="true" title="online" />
            </li>
          ))}
        </ul>
      </details>
    </aside>
  );
}
