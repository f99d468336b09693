import { type FormEvent, useId, useState } from "react";
import { href, navigate } from "../../hooks/use-route.js";

const SUGGESTED = ["general", "random", "help"];
const ROOM = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** Switch rooms: a few suggestions, or any name. */
export function RoomPicker({ current }: { readonly current: string }) {
  const [name, setName] = useState("");
  const [error, setError] = useState<string | undefined>();
  const id = useId();
  const go = (e: FormEvent) => {
    e.preventDefault();
    const room = name.trim().toLowerCase().replace(/\s+/g, "-");
    if (!ROOM.test(room)) {
      setError("Use 1–64 lowercase letters, digits, '-' or '_'.");
      return;
    }
    setError(undefined);
    setName("");
    navigate(`/chat/${room}`);
  };
  return (
    <nav className="room-picker" aria-label="Rooms">
      <ul className="room-tabs">
        {SUGGESTED.map((r) => (
          <li key={r}>
            <a
              href={href(`/chat/${r}`)}
              aria-current={r === current ? "page" : undefined}
              onClick={(e) => {
                e.preventDefault();
                navigate(`/chat/${r}`);
              }}
            >
              #{r}
            </a>
          </li>
        ))}
      </ul>
      <form onSubmit={go} className="room-form">
        <label htmlFor={id} className="sr-only">
          Room name
        </label>
        <input
          id={id}
          value={name}
          placeholder="Go to room…"
          autoCapitalize="none"
          spellCheck={false}
          aria-invalid={error ? true : undefined}
          aria-describedby={error ? `${id}-error` : undefined}
          onChange={(e) => setName(e.target.value)}
        />
        <button type="submit" className="button button--small">
          Join
        </button>
        {error && (
          <p className="field__error" id={`${id}-error`}>
            {error}
          </p>
        )}
      </form>
    </nav>
  );
}
