import { useSyncExternalStore } from "react";
import { TRANSPORT_PARAM } from "../transport.js";

/**
 * A very small router: the path is the route, the History API moves
 * between them, and `?transport=` survives every navigation. The server
 * answers any HTML GET with index.html, so every route can be reloaded.
 */

const listeners = new Set<() => void>();

function notify(): void {
  for (const l of listeners) l();
}

window.addEventListener("popstate", notify);

function subscribe(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The URL for `path` with the current `?transport=` kept. */
export function href(path: string): string {
  const current = new URLSearchParams(window.location.search).get(TRANSPORT_PARAM);
  const url = new URL(path, window.location.origin);
  if (current && !url.searchParams.has(TRANSPORT_PARAM)) {
    url.searchParams.set(TRANSPORT_PARAM, current);
  }
  return `${url.pathname}${url.search}${url.hash}`;
}

/** Goes to `path` (keeping `?transport=`). */
export function navigate(path: string, options: { replace?: boolean; state?: unknown } = {}): void {
  const target = href(path);
  if (target === `${window.location.pathname}${window.location.search}`) return;
  if (options.replace) window.history.replaceState(options.state ?? null, "", target);
  else window.history.pushState(options.state ?? null, "", target);
  notify();
}

/** Sets or removes one query parameter of the current URL, in place. */
export function setSearchParam(name: string, value: string | undefined): void {
  const url = new URL(window.location.href);
  if (value === undefined) url.searchParams.delete(name);
  else url.searchParams.set(name, value);
  window.history.replaceState(window.history.state, "", url);
  notify();
}

/** The current path, re-rendering on navigation. */
export function usePath(): string {
  return useSyncExternalStore(subscribe, () => window.location.pathname);
}

/** The current query string, re-rendering on navigation. */
export function useSearch(): string {
  return useSyncExternalStore(subscribe, () => window.location.search);
}
