import { createHash, randomBytes } from "node:crypto";

/**
 * Refresh tokens are opaque random strings. The server stores only their
 * SHA-256 (a fast hash suffices: the input has 256 bits of entropy, so there
 * is nothing to brute-force), which is also what lookups use.
 */

/** Bytes of randomness in a refresh token. */
export const REFRESH_TOKEN_BYTES = 32;

/** A new refresh token: 32 random bytes, base64url (43 characters, no padding). */
export function newRefreshToken(): string {
  return randomBytes(REFRESH_TOKEN_BYTES).toString("base64url");
}

/** The stored form of a refresh token: SHA-256 of its UTF-8 text, lower-case hex (64 characters). */
export function hashRefreshToken(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("hex");
}
