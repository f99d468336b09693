import { useEffect, useState } from "react";

/**
 * Seconds left until `until` (ms since epoch), ticking every second; 0 once
 * it has passed or when `until` is undefined.
 */
export function useCountdown(until: number | undefined): number {
  const left = () =>
    until === undefined ? 0 : Math.max(0, Math.ceil((until - Date.now()) / 1000));
  const [seconds, setSeconds] = useState(left);
  // biome-ignore lint/correctness/useExhaustiveDependencies: `left` is derived from `until`
  useEffect(() => {
    setSeconds(left());
    if (until === undefined) return;
    const timer = setInterval(() => {
      const s = left();
      setSeconds(s);
      if (s === 0) clearInterval(timer);
    }, 250);
    return () => clearInterval(timer);
  }, [until]);
  return seconds;
}
