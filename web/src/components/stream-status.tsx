import { describeError } from "../errors.js";
import { useCountdown } from "../hooks/use-countdown.js";
import type { ServerStreamResult } from "../hooks/use-server-stream.js";

const LABELS = {
  idle: "Paused",
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  done: "Done",
  error: "Disconnected",
} as const;

/** A small pill saying whether a live view is live, with "retry now" while it waits. */
export function StreamStatus({
  stream,
  label,
}: {
  readonly stream: Pick<ServerStreamResult<unknown>, "status" | "retryAt" | "error" | "retryNow">;
  readonly label: string;
}) {
  const seconds = useCountdown(stream.retryAt);
  const { status, error } = stream;
  // The countdown is for eyes only: a live region ticking every second
  // would be read out every second.
  const countdown = status === "reconnecting" && seconds > 0;
  return (
    <div className="stream-status">
      <output
        className={`pill pill--${status}`}
        aria-label={`${label}: ${LABELS[status]}`}
        title={error ? describeError(error) : undefined}
      >
        <span className="pill__dot" aria-hidden="true" />
        {countdown ? (
          <>
            Reconnecting<span aria-hidden="true"> in {seconds} s</span>…
          </>
        ) : (
          LABELS[status]
        )}
      </output>
      {(status === "reconnecting" || status === "error") && (
        <button type="button" className="link-button" onClick={stream.retryNow}>
          Retry now
        </button>
      )}
    </div>
  );
}
