import { hash, verify } from "@node-rs/argon2";

/**
 * Password hashing with argon2id. The library's defaults are argon2id with
 * OWASP's recommended parameters (19 MiB, 2 passes, one lane); the PHC string
 * records them, so raising them later keeps old hashes verifiable.
 * @node-rs/argon2 runs on libuv's thread pool, so hashing never blocks the
 * event loop.
 */

/** Hashes a password into a self-describing PHC string (`$argon2id$…`). */
export function hashPassword(password: string): Promise<string> {
  return hash(password);
}

/** Checks a password against a PHC string from `hashPassword`. */
export function verifyPassword(phc: string, password: string): Promise<boolean> {
  return verify(phc, password);
}
