/**
 * Who is in which room. A user counts once however many connections (tabs,
 * terminals) they have: `join` reports whether this was the user's first
 * connection in the room and `leave` whether it was the last, which is when
 * "joined"/"left" events are published.
 *
 * Two implementations: in-process (here) and Redis (`redis-presence.ts`),
 * which counts connections of every instance.
 */

/** A present user. */
export interface Member {
  readonly userId: string;
  readonly username: string;
}

/** Tracks presence per room. */
export interface PresenceTracker {
  /** Adds a connection; true when it is the user's first in the room. */
  join(room: string, member: Member, connectionId: string): Promise<boolean>;
  /** Removes a connection; true when it was the user's last in the room. */
  leave(room: string, member: Member, connectionId: string): Promise<boolean>;
  /** The members of a room, ordered by username. */
  members(room: string): Promise<Member[]>;
  /**
   * Shared trackers only: runs `listener` after this instance's connections
   * were written again following a lost connection (e.g. a Redis restart
   * that lost every key). Returns an unsubscribe.
   */
  onRestored?(listener: () => void): () => void;
  close(): Promise<void>;
}

/** In-process presence: room → user → their connection ids. */
export class LocalPresence implements PresenceTracker {
  readonly #rooms = new Map<string, Map<string, { member: Member; connections: Set<string> }>>();

  async join(room: string, member: Member, connectionId: string): Promise<boolean> {
    let users = this.#rooms.get(room);
    if (!users) {
      users = new Map();
      this.#rooms.set(room, users);
    }
    const entry = users.get(member.userId);
    if (entry) {
      entry.connections.add(connectionId);
      return false;
    }
    users.set(member.userId, { member, connections: new Set([connectionId]) });
    return true;
  }

  async leave(room: string, member: Member, connectionId: string): Promise<boolean> {
    const users = this.#rooms.get(room);
    const entry = users?.get(member.userId);
    if (!users || !entry?.connections.delete(connectionId)) return false;
    if (entry.connections.size > 0) return false;
    users.delete(member.userId);
    if (users.size === 0) this.#rooms.delete(room);
    return true;
  }

  async members(room: string): Promise<Member[]> {
    return [...(this.#rooms.get(room)?.values() ?? [])]
      .map((e) => e.member)
      .sort((a, b) => a.username.localeCompare(b.username));
  }

  async close(): Promise<void> {
    this.#rooms.clear();
  }
}
