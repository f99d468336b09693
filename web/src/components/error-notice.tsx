import { useMemo } from "react";
import { describeError, type RpcError } from "../errors.js";
import { useCountdown } from "../hooks/use-countdown.js";

/** When a rate-limited call may be repeated (ms since epoch), from its RetryInfo. */
export function useRetryUntil(error: RpcError | undefined): number | undefined {
  return useMemo(
    () =>
      error?.kind === "rate_limited" && error.retryDelayMs !== undefined
        ? Date.now() + error.retryDelayMs
        : undefined,
    [error],
  );
}

interface ErrorNoticeProps {
  readonly error: RpcError;
  /** Replaces the generic copy for this error. */
  readonly message?: string;
  readonly onRetry?: () => void;
  readonly compact?: boolean;
}

/**
 * One error, in words: a live countdown for rate limits (RetryInfo), a
 * request id to quote for internal errors, "reconnecting" for network trouble.
 */
export function ErrorNotice({ error, message, onRetry, compact }: ErrorNoticeProps) {
  const until = useRetryUntil(error);
  const seconds = useCountdown(until);
  const initialSeconds = Math.ceil((error.retryDelayMs ?? 0) / 1000);
  const tone = error.kind === "unavailable" ? "warning" : "error";
  return (
    <div className={`notice notice--${tone}${compact ? " notice--compact" : ""}`} role="alert">
      <p className="notice__text">
        {message ?? describeError(error)}
        {until !== undefined &&
          (seconds > 0 ? (
            <>
              {" "}
              {/* Ticks for eyes; read out once (an alert re-reads on every change). */}
              <span className="countdown" aria-hidden="true">
                Try again in {seconds} s.
              </span>
              <span className="sr-only">Try again in {initialSeconds} seconds.</span>
            </>
          ) : (
            " You can try again now."
          ))}
      </p>
      {error.kind === "internal" && error.requestId && (
        <p className="notice__meta">
          If this keeps happening, contact support and quote request id{" "}
          <code className="request-id">{error.requestId}</code>.
        </p>
      )}
      {onRetry && (seconds === 0 || until === undefined) && (
        <button type="button" className="button button--small" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}
