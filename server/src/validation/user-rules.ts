import { z } from "zod";

/**
 * The rules for user fields, shared by RegisterUser and CreateUsers. The
 * messages are written for people: the web app and CLI show them verbatim.
 */

/** 3–32 characters: letters, digits, `_`, `.`, `-`; starts with a letter or digit. */
export const username = z
  .string()
  .min(3, "must be at least 3 characters")
  .max(32, "must be at most 32 characters")
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    "may contain only letters, digits, '_', '.' and '-', and must start with a letter or digit",
  );

/** A plausible email address, at most 254 characters. */
export const email = z
  .string()
  .min(1, "is required")
  .max(254, "must be at most 254 characters")
  .pipe(z.email("must be a valid email address"));

/** 8–256 characters. */
export const password = z
  .string()
  .min(8, "must be at least 8 characters")
  .max(256, "must be at most 256 characters");

/** Optional, at most 64 characters, no control characters. */
export const displayName = z
  .string()
  .max(64, "must be at most 64 characters")
  // biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
  .regex(/^[^\u0000-\u001f\u007f]*$/, "must not contain control characters");

/** A new user, as RegisterUserRequest and CreateUsersRequest carry it. */
export const newUser = z.object({ username, email, password, displayName });

/** An id as clients send it: opaque, but bounded. */
export const userId = z.string().min(1, "is required").max(64, "must be at most 64 characters");

/** GetUserStreamRequest: 1–1000 ids. */
export const userIds = z.object({
  ids: z.array(userId).min(1, "must list at least one id").max(1000, "must list at most 1000 ids"),
});

/** GetUserRequest. */
export const getUser = z.object({ id: userId });
