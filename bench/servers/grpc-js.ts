import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import type { UserRecord } from "../../server/src/storage/index.js";
import { loadProtoPackage } from "../../test/support/grpc-js-proto.js";
import { bump, type Counter, emit, serveControl } from "./control.js";
import { encodeCursor, openStore } from "./server-modules.js";

/**
 * The peer: @grpc/grpc-js serving switchboard.user.v1.UserService's GetUser,
 * GetUserStream and WatchUsers from the same SQLite store (openStore on the
 * same DATA_DIR, store.getUser / store.listUsersAfter) with the same handler
 * logic as Switchboard's UserService: load, convert the row to the API's
 * User (no password hash), answer or NOT_FOUND. No interceptors, no auth.
 * WatchUsers here only replays the existing users and then stays open (the
 * idle streams the memory scenario needs); it has no live feed.
 *
 * Environment: PORT, DATA_DIR, MAX_CONCURRENT_STREAMS (optional).
 */

const port = Number(process.env.PORT ?? "0");
const dataDir = process.env.DATA_DIR;
if (!dataDir) throw new Error("DATA_DIR is required");

interface ApiUser {
  id: string;
  username: string;
  email: string;
  displayName: string;
  createTime: { seconds: number; nanos: number };
}

function toUser(record: UserRecord): ApiUser {
  const ms = record.createTime.getTime();
  return {
    id: record.id,
    username: record.username,
    email: record.email,
    displayName: record.displayName,
    createTime: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 },
  };
}

const loaded = loadProtoPackage("switchboard/user/v1/user.proto") as unknown as {
  switchboard: { user: { v1: { UserService: grpc.ServiceClientConstructor } } };
};
const service = loaded.switchboard.user.v1.UserService.service;

const store = await openStore({ dataDir });
const getUser: Counter = {};
const streamed: Counter = {};

type Unary<Req, Res> = grpc.handleUnaryCall<Req, Res>;
type ServerStream<Req, Res> = grpc.handleServerStreamingCall<Req, Res>;

/** Writes one message, waiting for 'drain' when grpc-js asks to. */
async function write<T>(call: grpc.ServerWritableStream<unknown, T>, message: T): Promise<void> {
  if (!call.write(message)) await once(call, "drain");
}

const handlers: {
  GetUser: Unary<{ id: string }, { user: ApiUser }>;
  GetUserStream: ServerStream<{ ids: string[] }, unknown>;
  WatchUsers: ServerStream<{ afterCursor: string }, unknown>;
} = {
  GetUser(call, callback) {
    const { id } = call.request;
    store.getUser(id).then(
      (record) => {
        if (!record) {
          bump(getUser, "missing");
          callback({ code: grpc.status.NOT_FOUND, details: `user "${id}" not found` });
          return;
        }
        bump(getUser, "found");
        callback(null, { user: toUser(record) });
      },
      (err: unknown) => {
        bump(getUser, "error");
        callback({ code: grpc.status.INTERNAL, details: String(err) });
      },
    );
  },

  GetUserStream(call) {
    (async () => {
      for (const id of call.request.ids) {
        if (call.cancelled) return;
        const record = await store.getUser(id);
        bump(streamed, record ? "found" : "missing");
        await write(
          call,
          record
            ? { id, user: toUser(record) }
            : { id, error: { code: 5, message: `user "${id}" not found`, details: [] } },
        );
      }
      call.end();
    })().catch((err: unknown) => {
      call.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  },

  WatchUsers(call) {
    bump(streamed, "watch");
    (async () => {
      let after = 0;
      for (;;) {
        const page = await store.listUsersAfter(after, 100);
        for (const record of page) {
          await write(call, { user: toUser(record), cursor: encodeCursor(record.seq) });
          after = record.seq;
        }
        if (page.length < 100) break;
      }
      // Idle until the client cancels (no live feed in this peer).
    })().catch((err: unknown) => {
      call.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  },
};

const maxStreams = process.env.MAX_CONCURRENT_STREAMS;
const server = new grpc.Server(
  maxStreams ? { "grpc.max_concurrent_streams": Number(maxStreams) } : {},
);
server.addService(service, handlers as unknown as grpc.UntypedServiceImplementation);
const bound = await new Promise<number>((resolve, reject) => {
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
    err ? reject(err) : resolve(p),
  );
});
emit({ type: "ready", url: `http://127.0.0.1:${bound}`, pid: process.pid });

serveControl({
  counters: () => ({ getUser, streamed }),
  stop: async () => {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 2000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await store.close();
  },
});
