import { z } from "zod";

/**
 * The rules for AuthService requests. Deliberately loose on content: Login
 * must answer a malformed username exactly like a wrong one (INVALID_CREDENTIALS),
 * so only emptiness and size are checked here.
 */

/** A username or an email address: 1–254 characters. */
export const login = z.string().min(1, "is required").max(254, "must be at most 254 characters");

/** 1–256 characters (registration demands at least 8; old passwords may be shorter). */
export const password = z.string().min(1, "is required").max(256, "must be at most 256 characters");

/**
 * A refresh token as the server issues it is 43 characters; anything up to
 * 256 is looked up (and then simply not found).
 */
export const refreshToken = z
  .string()
  .min(1, "is required")
  .max(256, "must be at most 256 characters");

/** LoginRequest. */
export const loginRequest = z.object({ username: login, password });

/** RefreshRequest. */
export const refreshRequest = z.object({ refreshToken });

/** LogoutRequest. */
export const logoutRequest = z.object({ refreshToken });
