import { useEffect, useRef } from "react";

/**
 * Sets the document title and moves focus to the page's heading when a page
 * is shown, so screen reader and keyboard users land on the new content
 * after a navigation.
 */
export function usePageHeading<T extends HTMLElement>(title: string) {
  const ref = useRef<T>(null);
  useEffect(() => {
    document.title = `${title} · Switchboard`;
    // Not on the very first load: the browser starts at the top anyway.
    if (document.body.dataset.navigated) ref.current?.focus({ preventScroll: false });
    document.body.dataset.navigated = "1";
  }, [title]);
  return ref;
}
