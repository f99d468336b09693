import type { Readable } from "node:stream";
import { Code, ConnectError } from "@connectrpc/connect";
import type { EnvelopedMessage } from "@connectrpc/connect/protocol";
import type { BodyBudget } from "./body-budget.js";

/**
 * The unary drivers' body readers: linear in the body's size (each chunk is
 * copied once, when the envelope or body it belongs to is complete), with
 * `readMaxBytes` checked as early as connect checks it, and every byte held
 * counted against the connection's `BodyBudget` until the body is read.
 * On an early error the rest of the body is left unread (paused): flow
 * control stops the client, and the answer resets the request side.
 */

/** Flags byte and 4-byte big-endian length before every message. */
export const ENVELOPE_PREFIX_BYTES = 5;

/** Chunks of a body, joined only when a whole envelope (or body) is there. */
class Chunks {
  readonly #chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.length += chunk.byteLength;
  }

  /** The first `n` bytes (n ≤ length), joined; keeps the rest. */
  shift(n: number): Buffer {
    const head = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : this.#join();
    const out = head.subarray(0, n);
    const rest = head.subarray(n);
    this.#chunks.length = 0;
    this.length = rest.byteLength;
    if (rest.byteLength > 0) this.#chunks.push(rest);
    return out;
  }

  /** The first `n` bytes without taking them (n ≤ length, small: the prefix). */
  peek(n: number): Buffer {
    const first = this.#chunks[0] as Buffer;
    if (first.byteLength >= n) return first;
    const joined = this.#join();
    this.#chunks.length = 0;
    this.#chunks.push(joined);
    return joined;
  }

  #join(): Buffer {
    return Buffer.concat(this.#chunks, this.length);
  }
}

/** Counts a body's bytes against `budget`; returns the release function. */
function budgeted(budget: BodyBudget) {
  let held = 0;
  return {
    take(n: number) {
      budget.take(n);
      held += n;
    },
    release() {
      if (held > 0) budget.give(held);
      held = 0;
    },
  };
}

/**
 * Reads a gRPC unary request body: at most two envelopes (a second is an
 * error once it is complete), each checked against `readMaxBytes` as soon as
 * its prefix arrives. Calls `done` once: with the first envelope (and the
 * second, if one came), or with an error (and the first envelope, when the
 * error came after it).
 */
export function readUnaryEnvelopes(
  body: Readable,
  readMaxBytes: number,
  budget: BodyBudget,
  done: (
    error: ConnectError | undefined,
    first?: EnvelopedMessage,
    second?: EnvelopedMessage,
  ) => void,
): void {
  const chunks = new Chunks();
  const held = budgeted(budget);
  let first: EnvelopedMessage | undefined;
  /** Length of the envelope being read, once its prefix is in. */
  let expected = -1;
  let finished = false;
  const finish = (error: ConnectError | undefined, second?: EnvelopedMessage) => {
    if (finished) return;
    finished = true;
    body.off("data", onData);
    body.off("end", onEnd);
    held.release();
    if (!body.readableEnded) body.pause();
    done(error, first, second);
  };
  const onData = (chunk: Buffer) => {
    try {
      held.take(chunk.byteLength);
    } catch (err) {
      finish(err as ConnectError);
      return;
    }
    chunks.push(chunk);
    while (!finished) {
      if (expected < 0) {
        if (chunks.length < ENVELOPE_PREFIX_BYTES) return;
        const length = chunks.peek(ENVELOPE_PREFIX_BYTES).readUInt32BE(1);
        if (length > readMaxBytes) {
          finish(
            new ConnectError(
              `message size ${length} is larger than configured readMaxBytes ${readMaxBytes}`,
              Code.ResourceExhausted,
            ),
          );
          return;
        }
        expected = length;
      }
      if (chunks.length < ENVELOPE_PREFIX_BYTES + expected) return;
      const bytes = chunks.shift(ENVELOPE_PREFIX_BYTES + expected);
      expected = -1;
      const env: EnvelopedMessage = {
        flags: bytes[0] as number,
        data: bytes.subarray(ENVELOPE_PREFIX_BYTES),
      };
      if (first !== undefined) {
        finish(undefined, env);
        return;
      }
      first = env;
    }
  };
  const onEnd = () => {
    finish(
      chunks.length > 0
        ? new ConnectError("protocol error: incomplete envelope", Code.InvalidArgument)
        : undefined,
    );
  };
  // A body that was empty (END_STREAM on the headers) may have ended
  // before anyone listened: Node emitted 'end' already.
  if (body.readableEnded) {
    onEnd();
    return;
  }
  body.on("data", onData);
  body.on("end", onEnd);
}

/**
 * Reads a Connect unary request body as connect's `readAllBytes` does: with
 * a usable `content-length`, a larger one than `readMaxBytes` fails before a
 * byte is read, and the body must be exactly that long; without one, the
 * running total must stay within `readMaxBytes`. Calls `done` once, with the
 * bytes or the error (same codes and messages as connect's).
 */
export function readUnaryBody(
  body: Readable,
  readMaxBytes: number,
  contentLength: string | null,
  budget: BodyBudget,
  done: (result: Uint8Array | ConnectError) => void,
): void {
  const hint = contentLength === null ? Number.NaN : Number.parseInt(contentLength, 10);
  const known = Number.isSafeInteger(hint) && hint >= 0;
  if (known && hint > readMaxBytes) {
    body.pause();
    done(
      new ConnectError(
        `message size ${hint} is larger than configured readMaxBytes ${readMaxBytes}`,
        Code.ResourceExhausted,
      ),
    );
    return;
  }
  const chunks = new Chunks();
  const held = budgeted(budget);
  const stop = (result: Uint8Array | ConnectError) => {
    body.off("data", onData);
    body.off("end", onEnd);
    held.release();
    if (result instanceof ConnectError && !body.readableEnded) body.pause();
    done(result);
  };
  const onData = (chunk: Buffer) => {
    const total = chunks.length + chunk.byteLength;
    if (known && total > hint) {
      stop(
        new ConnectError(
          `protocol error: promised ${hint} bytes, received ${total}`,
          Code.InvalidArgument,
        ),
      );
      return;
    }
    if (!known && total > readMaxBytes) {
      stop(
        new ConnectError(
          `message size is larger than configured readMaxBytes ${readMaxBytes}`,
          Code.ResourceExhausted,
        ),
      );
      return;
    }
    try {
      held.take(chunk.byteLength);
    } catch (err) {
      stop(err as ConnectError);
      return;
    }
    chunks.push(chunk);
  };
  const onEnd = () => {
    if (known && chunks.length < hint) {
      stop(
        new ConnectError(
          `protocol error: promised ${hint} bytes, received ${chunks.length}`,
          Code.InvalidArgument,
        ),
      );
      return;
    }
    stop(chunks.length === 0 ? new Uint8Array(0) : chunks.shift(chunks.length));
  };
  // A body that was empty (END_STREAM on the headers) may have ended
  // before anyone listened: Node emitted 'end' already.
  if (body.readableEnded) {
    onEnd();
    return;
  }
  body.on("data", onData);
  body.on("end", onEnd);
}
