import type { Interceptor } from "@connectrpc/connect";
import type { Compression } from "@connectrpc/connect/protocol";

/** What every driver of one engine serves with: connect's handler options, defaults applied. */
export interface Serving {
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  /** Responses smaller than this are not compressed (connect's default: 1 KiB). */
  readonly compressMinBytes: number;
  /** The longest deadline a client may ask for (connect's default: no limit). */
  readonly maxTimeoutMs: number;
  readonly acceptCompression: Compression[];
  readonly interceptors: Interceptor[];
  /** Aborted when shutdown ends the calls still open. */
  readonly shutdownSignal: AbortSignal;
}
