import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";

/**
 * The successor refresh token kept with a rotated session, for retry-safe
 * refresh. It is sealed (AES-256-GCM) under a key derived (HKDF-SHA256) from
 * the rotated token itself, which the server never stores: only whoever
 * presents the old token can open it, so the database (or a dump of it)
 * never holds a usable refresh token, just as it holds only token hashes.
 */

const INFO = Buffer.from("switchboard refresh successor v1");
const IV_BYTES = 12;
const TAG_BYTES = 16;

function keyFor(oldToken: string): Buffer {
  return Buffer.from(hkdfSync("sha256", Buffer.from(oldToken, "utf8"), Buffer.alloc(0), INFO, 32));
}

/** Seals `successor` so that only `oldToken` opens it (base64url of iv, tag, ciphertext). */
export function sealSuccessor(successor: string, oldToken: string): string {
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv("aes-256-gcm", keyFor(oldToken), iv);
  const body = Buffer.concat([cipher.update(successor, "utf8"), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString("base64url");
}

/** Opens a box from {@link sealSuccessor}; undefined if `oldToken` is not the one it was sealed for. */
export function openSuccessor(box: string, oldToken: string): string | undefined {
  const raw = Buffer.from(box, "base64url");
  if (raw.length <= IV_BYTES + TAG_BYTES) return undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", keyFor(oldToken), raw.subarray(0, IV_BYTES));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([
      decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)),
      decipher.final(),
    ]).toString("utf8");
  } catch {
    return undefined;
  }
}
