import { type FormEvent, useId, useRef, useState } from "react";

const MAX_LENGTH = 2000;

/** The message box: Enter sends, Shift+Enter starts a new line. */
export function Composer({
  room,
  onSend,
  blocked,
}: {
  readonly room: string;
  readonly onSend: (text: string) => void;
  /** Rate limited: sending waits for the countdown shown above. */
  readonly blocked: boolean;
}) {
  const [text, setText] = useState("");
  const id = useId();
  const ref = useRef<HTMLTextAreaElement>(null);
  const trimmed = text.trim();
  const tooLong = text.length > MAX_LENGTH;
  const canSend = trimmed.length > 0 && !tooLong && !blocked;

  const send = (e?: FormEvent) => {
    e?.preventDefault();
    if (!canSend) return;
    onSend(trimmed);
    setText("");
    ref.current?.focus();
  };

  return (
    <form className="composer" onSubmit={send}>
      <label htmlFor={id} className="sr-only">
        Message #{room}
      </label>
      <textarea
        id={id}
        ref={ref}
        rows={1}
        value={text}
        placeholder={`Message #${room}`}
        aria-describedby={`${id}-help`}
        aria-invalid={tooLong || undefined}
        onChange={(e) => setText(e.target.value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.nativeEvent.isComposing) {
            e.preventDefault();
            send();
          }
        }}
      />
      <span id={`${id}-help`} className="sr-only">
        Enter sends, Shift+Enter adds a line.
      </span>
      {text.length > MAX_LENGTH - 200 && (
        <span className={`composer__count${tooLong ? " composer__count--over" : ""}`}>
          {text.length}/{MAX_LENGTH}
        </span>
      )}
      <button type="submit" className="button button--primary" disabled={!canSend}>
        Send
      </button>
    </form>
  );
}
