import Database from "better-sqlite3";
import { Kysely, SqliteDialect, sql } from "kysely";
import { afterEach, describe, expect, it } from "vitest";
import { withStatementCache } from "./statement-cache.js";

describe("withStatementCache", () => {
  let sqlite: Database.Database;
  afterEach(() => sqlite?.close());

  const open = (max?: number) => {
    sqlite = new Database(":memory:");
    sqlite.exec("create table t (id integer primary key, name text)");
    return withStatementCache(sqlite, max);
  };

  it("prepares each SQL text once and hands back the same statement", () => {
    const db = open();
    const a = db.prepare("select * from t where id = ?");
    expect(db.prepare("select * from t where id = ?")).toBe(a);
    expect(db.prepare("select name from t where id = ?")).not.toBe(a);
  });

  it("never hands out a statement that is busy iterating", () => {
    const db = open();
    sqlite.exec("insert into t (name) values ('a'), ('b')");
    const first = db.prepare("select * from t");
    const it = first.iterate([]);
    it.next();
    const second = db.prepare("select * from t");
    expect(second).not.toBe(first);
    expect(second.all([])).toHaveLength(2);
    it.return?.();
    expect(db.prepare("select * from t")).toBe(first);
  });

  it("stays bounded: the least recently used statements are dropped", () => {
    const db = open(2);
    const a = db.prepare("select 1");
    db.prepare("select 2");
    db.prepare("select 3");
    expect(db.prepare("select 1")).not.toBe(a);
  });

  it("keeps answering correctly under Kysely as rows and the schema change", async () => {
    const db = new Kysely<{ t: { id: number; name: string } }>({
      dialect: new SqliteDialect({ database: open() }),
    });
    const byId = (id: number) =>
      db.selectFrom("t").selectAll().where("id", "=", id).executeTakeFirst();
    await db.insertInto("t").values({ id: 1, name: "ada" }).execute();
    expect(await byId(1)).toEqual({ id: 1, name: "ada" });
    await db.updateTable("t").set({ name: "grace" }).where("id", "=", 1).execute();
    expect(await byId(1)).toEqual({ id: 1, name: "grace" });
    await sql`alter table t add column extra text default 'x'`.execute(db);
    expect(await byId(1)).toEqual({ id: 1, name: "grace", extra: "x" });
  });
});
