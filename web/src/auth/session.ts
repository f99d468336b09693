import type { DescMethod, Message } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type Interceptor,
  type Transport,
} from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import {
  AuthService,
  type LoginResponse,
  type RefreshResponse,
} from "../../../gen/switchboard/auth/v1/auth_pb.js";
import { type User, UserService } from "../../../gen/switchboard/user/v1/user_pb.js";
import { shouldRefresh } from "../../../shared/rpc-error.js";
import { describeError, rpcError } from "../errors.js";

/**
 * The signed-in session: tokens, the current user, and the one refresh in
 * flight.
 *
 * Where the tokens live, and why:
 * - The access token (a 15-minute JWT) lives only in memory (this module).
 *   A reload drops it; the refresh token gets a new one.
 * - The refresh token lives in memory AND in `sessionStorage`
 *   (key `switchboard.refresh`), so a reload or a new navigation in the same
 *   tab keeps you signed in, while closing the tab ends it on this device
 *   (nothing lingers in `localStorage` for the next person at a shared
 *   computer, and tabs don't share — and race to rotate — one token).
 * - Trade-off: anything stored where JavaScript can read it can be read by an
 *   XSS bug in this origin. An HttpOnly, SameSite=Strict cookie would hide
 *   it from scripts, but the API is bearer-token based (gRPC, gRPC-Web and
 *   Connect clients all send `authorization`), a cookie would need a
 *   server-side cookie endpoint plus CSRF protection, and the attacker
 *   with XSS can already make calls as the user while the page is open. So
 *   we rely on: no HTML injection (React escapes everything, no
 *   dangerouslySetInnerHTML), a short access-token TTL, and the server's
 *   rotation with reuse detection: a stolen refresh token that is used
 *   after ours (or before) revokes the whole login.
 * - Bearer headers are not sent automatically by the browser, so there is
 *   no CSRF exposure with this scheme.
 *
 * Refresh: calls that fail with UNAUTHENTICATED/TOKEN_EXPIRED are refreshed
 * once and retried (see `authInterceptor`); concurrent failures share one
 * Refresh call. A refresh the server refuses ends the session (back to the
 * login screen, with a notice). A refresh that fails for network reasons
 * keeps the session: the call fails as Unavailable and is retried later.
 */

const STORAGE_KEY = "switchboard.refresh";

export type SessionStatus = "restoring" | "signed-out" | "signed-in";

export interface SessionSnapshot {
  readonly status: SessionStatus;
  readonly user: User | undefined;
  /** Why the last session ended, for the login screen (e.g. "Your session has expired."). */
  readonly notice: string | undefined;
}

type TokenPair = LoginResponse | RefreshResponse;

/** Methods that need no access token (server/src/auth/policy.ts says the same). */
const PUBLIC_METHODS: ReadonlySet<DescMethod> = new Set<DescMethod>([
  UserService.method.registerUser,
  AuthService.method.login,
  AuthService.method.refresh,
]);

function readStoredRefreshToken(): string | undefined {
  try {
    return sessionStorage.getItem(STORAGE_KEY) ?? undefined;
  } catch {
    return undefined;
  }
}

function storeRefreshToken(token: string | undefined): void {
  try {
    if (token) sessionStorage.setItem(STORAGE_KEY, token);
    else sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // Storage disabled: the session then lasts as long as the page.
  }
}

export class Session {
  #accessToken: string | undefined;
  #accessExpiresAt: number | undefined;
  #refreshToken: string | undefined = readStoredRefreshToken();
  #snapshot: SessionSnapshot = {
    status: this.#refreshToken ? "restoring" : "signed-out",
    user: undefined,
    notice: undefined,
  };
  #listeners = new Set<() => void>();
  #refreshing: Promise<string> | undefined;
  #restoring: Promise<void> | undefined;
  /** A transport without the auth interceptor, for Refresh and Logout. */
  #bare: Transport | undefined;
  /** Counts of Refresh calls made, for tests and the debug panel. */
  refreshCount = 0;

  /**
   * Sets the transport used for Refresh and Logout (the app's, without
   * interceptors). The first one also starts restoring a stored session.
   */
  setTransport(transport: Transport): void {
    this.#bare = transport;
    void this.restore();
  }

  subscribe = (listener: () => void): (() => void) => {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  };

  getSnapshot = (): SessionSnapshot => this.#snapshot;

  #set(next: Partial<SessionSnapshot>): void {
    this.#snapshot = { ...this.#snapshot, ...next };
    for (const l of this.#listeners) l();
  }

  #accept(pair: TokenPair): void {
    this.#accessToken = pair.accessToken;
    this.#accessExpiresAt = pair.accessTokenExpireTime
      ? timestampDate(pair.accessTokenExpireTime).getTime()
      : undefined;
    this.#refreshToken = pair.refreshToken;
    storeRefreshToken(pair.refreshToken);
    this.#set({ status: "signed-in", user: pair.user, notice: undefined });
  }

  /** After a successful Login. */
  signIn(response: LoginResponse): void {
    this.#accept(response);
  }

  /** Forgets every token; `notice` is shown on the login screen. */
  end(notice?: string): void {
    this.#accessToken = undefined;
    this.#accessExpiresAt = undefined;
    this.#refreshToken = undefined;
    storeRefreshToken(undefined);
    this.#set({ status: "signed-out", user: undefined, notice });
  }

  /** Logout: ends the session on the server (best effort), then here. */
  async signOut(): Promise<void> {
    const refreshToken = this.#refreshToken;
    const accessToken = this.#accessToken;
    this.end();
    if (refreshToken && accessToken && this.#bare) {
      await createClient(AuthService, this.#bare)
        .logout({ refreshToken }, { headers: { authorization: `Bearer ${accessToken}` } })
        .catch(() => undefined);
    }
  }

  /** When the access token expires (ms since epoch), if known. */
  get accessExpiresAt(): number | undefined {
    return this.#accessExpiresAt;
  }

  /**
   * On start-up: a refresh token left by this tab (a reload) is exchanged
   * for a new access token. Network failures are retried a few times.
   */
  restore(): Promise<void> {
    if (this.#snapshot.status !== "restoring") return Promise.resolve();
    this.#restoring ??= (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          await this.#refresh();
          return;
        } catch (err) {
          const e = rpcError(err);
          if (e.kind !== "unavailable" || attempt >= 4) {
            if (this.#snapshot.status === "restoring") {
              this.end(
                e.kind === "unavailable"
                  ? "Couldn't reach Switchboard to restore your session. Please sign in."
                  : undefined,
              );
            }
            return;
          }
          await new Promise((r) => setTimeout(r, 400 * 2 ** attempt));
        }
      }
    })();
    return this.#restoring;
  }

  /** The access token to send now; waits for a restore in progress. */
  async accessToken(): Promise<string | undefined> {
    if (this.#snapshot.status === "restoring") await this.restore();
    if (this.#refreshing) await this.#refreshing.catch(() => undefined);
    return this.#accessToken;
  }

  /**
   * A fresh access token after `rejected` was refused as expired. Calls that
   * fail together share one Refresh; a call that comes back with an already
   * replaced token just takes the new one.
   */
  refreshAfter(rejected: string): Promise<string> {
    if (this.#accessToken && this.#accessToken !== rejected) {
      return Promise.resolve(this.#accessToken);
    }
    return this.#refresh();
  }

  #refresh(): Promise<string> {
    this.#refreshing ??= (async () => {
      const refreshToken = this.#refreshToken;
      if (!refreshToken || !this.#bare) {
        this.end("Please sign in to continue.");
        throw new ConnectError("not signed in", Code.Unauthenticated);
      }
      this.refreshCount++;
      try {
        const pair = await createClient(AuthService, this.#bare).refresh({ refreshToken });
        this.#accept(pair);
        return pair.accessToken;
      } catch (err) {
        const e = rpcError(err);
        // Refused (revoked, expired, reused, …): this session is over.
        // Anything else (network) keeps the session for a later retry.
        if (e.kind === "unauthenticated" || e.kind === "invalid") {
          this.end(describeError(e));
          throw new ConnectError("session ended", Code.Unauthenticated);
        }
        throw err;
      }
    })().finally(() => {
      this.#refreshing = undefined;
    });
    return this.#refreshing;
  }
}

/**
 * Sends `authorization: Bearer <access token>` on every non-public call.
 * On UNAUTHENTICATED/TOKEN_EXPIRED it refreshes once and retries the call,
 * for unary calls and for server streams (whose auth failure always comes
 * before the first message).
 */
export function authInterceptor(session: Session): Interceptor {
  return (next) => async (req) => {
    if (PUBLIC_METHODS.has(req.method)) return next(req);
    const current = await session.accessToken();
    if (!current) throw new ConnectError("not signed in", Code.Unauthenticated);
    const token: string = current;
    req.header.set("authorization", `Bearer ${token}`);

    const expired = (err: unknown) => shouldRefresh(rpcError(err));
    const withToken = (t: string) => req.header.set("authorization", `Bearer ${t}`);

    if (!req.stream) {
      try {
        return await next(req);
      } catch (err) {
        if (!expired(err)) throw err;
        withToken(await session.refreshAfter(token));
        return await next(req);
      }
    }

    // Server streams: buffer the request so it can be sent again.
    if (req.method.methodKind !== "server_streaming") return next(req);
    const input: Message[] = [];
    for await (const m of req.message) input.push(m);
    const call = () => next({ ...req, message: createAsyncIterable(input) });
    let retried = false;
    let first: Awaited<ReturnType<typeof call>>;
    try {
      first = await call();
    } catch (err) {
      if (!expired(err)) throw err;
      retried = true;
      withToken(await session.refreshAfter(token));
      first = await call();
    }
    if (!first.stream) return first;
    const head = first;
    async function* messages() {
      let current = head;
      for (;;) {
        let yielded = false;
        try {
          for await (const m of current.message) {
            yielded = true;
            yield m;
          }
          return;
        } catch (err) {
          if (yielded || retried || !expired(err)) throw err;
          retried = true;
          withToken(await session.refreshAfter(token));
          const again = await call();
          if (!again.stream) return;
          current = again;
        }
      }
    }
    return { ...head, message: messages() };
  };
}
