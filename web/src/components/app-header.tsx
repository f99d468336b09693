import { useId } from "react";
import { useSession } from "../auth/use-session.js";
import { href, navigate, setSearchParam, usePath } from "../hooks/use-route.js";
import {
  parseTransportKind,
  TRANSPORT_KINDS,
  TRANSPORT_PARAM,
  type TransportKind,
} from "../transport.js";
import { Avatar } from "./avatar.js";

function NavLink({ to, label, active }: { to: string; label: string; active: boolean }) {
  return (
    <a
      href={href(to)}
      className="nav__link"
      aria-current={active ? "page" : undefined}
      onClick={(e) => {
        if (e.metaKey || e.ctrlKey || e.shiftKey || e.button !== 0) return;
        e.preventDefault();
        navigate(to);
      }}
    >
      {label}
    </a>
  );
}

/** Brand, navigation, the protocol setting and the signed-in user. */
export function AppHeader({ transportKind }: { readonly transportKind: TransportKind }) {
  const { status, user, session } = useSession();
  const path = usePath();
  const selectId = useId();
  const signedIn = status === "signed-in";
  return (
    <header className="app-header">
      <div className="app-header__inner">
        <a
          className="brand"
          href={href("/")}
          onClick={(e) => {
            e.preventDefault();
            navigate("/");
          }}
        >
          <span className="brand__mark" aria-hidden="true" />
          <span className="brand__name">Switchboard</span>
        </a>
        {signedIn && (
          <nav className="nav" aria-label="Main">
            <NavLink to="/" label="People" active={path === "/" || path === "/people"} />
            <NavLink to="/chat/general" label="Chat" active={path.startsWith("/chat")} />
          </nav>
        )}
        <div className="app-header__tools">
          <div className="protocol">
            <label htmlFor={selectId}>Protocol</label>
            <select
              id={selectId}
              value={transportKind}
              onChange={(e) => setSearchParam(TRANSPORT_PARAM, parseTransportKind(e.target.value))}
            >
              {TRANSPORT_KINDS.map((t) => (
                <option key={t.kind} value={t.kind}>
                  {t.label}
                </option>
              ))}
            </select>
          </div>
          {signedIn && user && (
            <div className="me">
              <Avatar name={user.displayName || user.username} seed={user.id} size="sm" />
              <span className="me__name" title={`Signed in as ${user.username}`}>
                {user.username}
              </span>
              <button
                type="button"
                className="button button--ghost button--small"
                onClick={() => void session.signOut()}
              >
                Sign out
              </button>
            </div>
          )}
        </div>
      </div>
    </header>
  );
}
