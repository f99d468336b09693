/**
 * Sessions and session families whose access tokens must stop working before
 * they expire (Logout, refresh-token theft). Checked on every authenticated
 * call, so `has` is synchronous and in memory; an entry is kept as long as an
 * access token issued before the revocation can still be accepted (the
 * access-token lifetime plus the clock tolerance), then forgotten.
 */
export interface RevokedSessions {
  /** Whether this session or family id was revoked. */
  has(id: string): boolean;
  /** Revokes session and/or family ids; every instance sees it (with Redis, within ms). */
  revoke(ids: readonly string[]): Promise<void>;
  /** Stops listening for other instances' revocations. Idempotent. */
  close(): Promise<void>;
}

/** Options for {@link LocalRevokedSessions}. */
export interface RevokedSessionsOptions {
  /** How long an entry is kept: access-token lifetime plus clock tolerance. */
  readonly retentionMs: number;
  /** The current time in ms; tests move it. */
  readonly now?: () => number;
}

/**
 * The revocations of one process (no Redis): a map of id → when it may be
 * forgotten. A restart forgets them, so access tokens issued before a logout
 * work again after a restart until they expire.
 */
export class LocalRevokedSessions implements RevokedSessions {
  readonly #until = new Map<string, number>();
  readonly #retentionMs: number;
  readonly #now: () => number;
  #nextPrune = 0;

  constructor(options: RevokedSessionsOptions) {
    this.#retentionMs = options.retentionMs;
    this.#now = options.now ?? Date.now;
  }

  has(id: string): boolean {
    const until = this.#until.get(id);
    if (until === undefined) return false;
    if (until > this.#now()) return true;
    this.#until.delete(id);
    return false;
  }

  /** Records ids until `until` (ms since the epoch); the longer of two records wins. */
  remember(ids: readonly string[], until: number): void {
    const now = this.#now();
    if (until <= now) return;
    for (const id of ids) {
      if ((this.#until.get(id) ?? 0) < until) this.#until.set(id, until);
    }
    // Insertion order is roughly expiry order; drop the expired ones now and
    // then so the map stays as small as the revocations of one TTL.
    if (now >= this.#nextPrune) {
      this.#nextPrune = now + 60_000;
      for (const [id, t] of this.#until) if (t <= now) this.#until.delete(id);
    }
  }

  /** When an entry revoked now may be forgotten (ms since the epoch). */
  expiryFromNow(): number {
    return this.#now() + this.#retentionMs;
  }

  async revoke(ids: readonly string[]): Promise<void> {
    this.remember(ids, this.expiryFromNow());
  }

  async close(): Promise<void> {}
}
