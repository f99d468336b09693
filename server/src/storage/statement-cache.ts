import type Database from "better-sqlite3";
import type { SqliteDatabase } from "kysely";
import { LRUCache } from "lru-cache";

/**
 * The better-sqlite3 database as Kysely sees it, with prepared statements
 * kept per SQL text. Kysely's SQLite driver calls `prepare` for every query,
 * and SQLite parses and plans the SQL each time: on a GetUser that was the
 * single biggest storage cost (~6 % of a unary call's CPU in the bench
 * profile). Kysely has no statement cache of its own, so it lives here.
 *
 * A statement that is busy (an `iterate()` still open on it) is never handed
 * out twice: a fresh one is prepared for that query instead. SQLite
 * re-prepares cached statements itself when the schema changes.
 */
export function withStatementCache(sqlite: Database.Database, max = 256): SqliteDatabase {
  const statements = new LRUCache<string, Database.Statement>({ max });
  return {
    close: () => sqlite.close(),
    prepare(sql) {
      const cached = statements.get(sql);
      if (cached !== undefined && !cached.busy) return cached;
      const statement = sqlite.prepare(sql);
      if (cached === undefined) statements.set(sql, statement);
      return statement;
    },
  };
}
