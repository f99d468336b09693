import type { DescMethod } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Client, Interceptor, StreamRequest, StreamResponse } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";
import {
  AuthService,
  type LoginResponse,
  type RefreshResponse,
} from "../../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { shouldRefresh, toRpcError } from "../../shared/rpc-error.js";
import { type CredentialStore, isNearExpiry, type StoredSession } from "./credentials.js";
import { AuthRequiredError } from "./errors.js";

/**
 * The caller's identity for one server: the stored session (refreshed when
 * its access token expires) or an access token given with --token (used as
 * is, never refreshed).
 */
export class Session {
  private cached: string | undefined;

  constructor(
    private readonly options: {
      readonly store: CredentialStore;
      /** The key of this server in the credentials file. */
      readonly server: string;
      /** --token: use this access token instead of the stored session. */
      readonly explicitToken?: string;
      /** A client for Refresh (a public call, so no auth is attached). */
      readonly authClient: () => Client<typeof AuthService>;
      readonly timeoutMs?: number;
    },
  ) {
    this.cached = options.explicitToken;
  }

  /** Whether expired tokens can be refreshed (not with --token). */
  get canRefresh(): boolean {
    return this.options.explicitToken === undefined;
  }

  /** The access token to send; rejects with "log in" when there is none. */
  async accessToken(): Promise<string> {
    if (this.cached !== undefined) return this.cached;
    const stored = await this.options.store.get(this.options.server);
    if (!stored) {
      throw new AuthRequiredError(
        `not logged in to ${this.options.server}: log in first (switchboard login <username>) or pass --token`,
      );
    }
    this.cached = stored.accessToken;
    return stored.accessToken;
  }

  /** The stored session, for logout and whoami. */
  stored(): Promise<StoredSession | undefined> {
    return this.options.store.get(this.options.server);
  }

  /**
   * Exchanges the refresh token for a new pair, stores it and returns the new
   * access token. `stale` is the token that was refused: if another process
   * has refreshed meanwhile, its fresh token is used instead of spending the
   * (already rotated) refresh token again. A refused refresh token ends the
   * stored session: AuthRequiredError ("log in again").
   */
  async refresh(stale: string): Promise<string> {
    if (!this.canRefresh) throw new AuthRequiredError("the --token access token has expired");
    const { store, server } = this.options;
    const token = await store.withLock(async () => {
      const current = await store.get(server);
      if (!current) {
        throw new AuthRequiredError(`not logged in to ${server} any more: log in again`);
      }
      if (current.accessToken !== stale && !isNearExpiry(current.accessToken)) {
        return current.accessToken;
      }
      let response: RefreshResponse;
      try {
        response = await this.options
          .authClient()
          .refresh({ refreshToken: current.refreshToken }, { timeoutMs: this.options.timeoutMs });
      } catch (error) {
        const rpc = toRpcError(error);
        if (rpc.kind === "unauthenticated") {
          await store.delete(server, { onlyIfRefreshToken: current.refreshToken, locked: true });
          throw new AuthRequiredError(
            `your session on ${server} has ended (${rpc.reason ?? rpc.message}): log in again`,
            rpc.reason,
          );
        }
        throw error;
      }
      const next = sessionFrom(response);
      await store.putLocked(server, next);
      return next.accessToken;
    });
    this.cached = token;
    return token;
  }

  /** Refreshes first when the token is expired or about to be (before streams). */
  async ensureFresh(): Promise<string> {
    const token = await this.accessToken();
    if (this.canRefresh && isNearExpiry(token)) return this.refresh(token);
    return token;
  }
}

/** What to store from a Login or Refresh response. */
export function sessionFrom(response: LoginResponse | RefreshResponse): StoredSession {
  const iso = (t: typeof response.accessTokenExpireTime) =>
    t ? timestampDate(t).toISOString() : undefined;
  return {
    accessToken: response.accessToken,
    refreshToken: response.refreshToken,
    accessTokenExpireTime: iso(response.accessTokenExpireTime),
    refreshTokenExpireTime: iso(response.refreshTokenExpireTime),
    userId: response.user?.id ?? "",
    username: response.user?.username ?? "",
  };
}

const procedure = (m: DescMethod) => `${m.parent.typeName}/${m.name}`;

/** Calls that need no access token (server/src/auth/policy.ts lists the same). */
const PUBLIC_PROCEDURES = new Set(
  [UserService.method.registerUser, AuthService.method.login, AuthService.method.refresh].map(
    procedure,
  ),
);

/**
 * Attaches `authorization: Bearer <token>` and keeps the token fresh:
 * - unary calls: on UNAUTHENTICATED with reason TOKEN_EXPIRED, refresh once
 *   and retry;
 * - streams: refresh before starting when the token is expired or close to
 *   `exp`; server streams also retry once on TOKEN_EXPIRED before their first
 *   message (client and bidi streams cannot replay what they already sent).
 */
export function authInterceptor(session: Session): Interceptor {
  return (next) => async (req) => {
    if (PUBLIC_PROCEDURES.has(procedure(req.method))) return next(req);
    const authorize = (token: string) => req.header.set("authorization", `Bearer ${token}`);
    const mayRetry = (error: unknown) => session.canRefresh && shouldRefresh(toRpcError(error));

    if (!req.stream) {
      const token = await session.accessToken();
      authorize(token);
      try {
        return await next(req);
      } catch (error) {
        if (!mayRetry(error)) throw error;
        authorize(await session.refresh(token));
        return await next(req);
      }
    }

    let token = await session.ensureFresh();
    authorize(token);
    if (req.method.methodKind !== "server_streaming") return next(req);

    // A server stream's single request can be replayed: keep it.
    const requests: unknown[] = [];
    for await (const m of req.message) requests.push(m);
    const open = async () => {
      const res = await next({
        ...req,
        message: createAsyncIterable(requests),
      } as StreamRequest);
      const it = (res as StreamResponse).message[Symbol.asyncIterator]();
      const first = await it.next();
      return { res: res as StreamResponse, it, first };
    };
    let opened: Awaited<ReturnType<typeof open>>;
    try {
      opened = await open();
    } catch (error) {
      if (!mayRetry(error)) throw error;
      token = await session.refresh(token);
      authorize(token);
      opened = await open();
    }
    const { res, it, first } = opened;
    return {
      ...res,
      message: (async function* () {
        if (first.done) return;
        yield first.value;
        yield* { [Symbol.asyncIterator]: () => it };
      })(),
    };
  };
}
