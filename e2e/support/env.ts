/**
 * Server settings for end-to-end runs: the main server's fixed port and an
 * environment suited to tests — a known admin, and rate limits high enough
 * that only the spec about rate limiting (which starts its own server) meets
 * one. Mirrors TEST_ENV in test/support/server.ts.
 */
export const E2E_PORT = Number(process.env.E2E_PORT ?? 18300);

export const E2E_ENV: Readonly<Record<string, string>> = {
  NODE_ENV: "test",
  HOST: "127.0.0.1",
  LOG_FORMAT: "json",
  LOG_LEVEL: "warn",
  SHUTDOWN_GRACE_MS: "2000",
  ADMIN_USERNAMES: "admin",
  RATE_LIMIT_USER: "100000/1",
  RATE_LIMIT_PUBLIC: "100000/1",
  RATE_LIMIT_LOGIN: "100000/1",
  RATE_LIMIT_REGISTER: "100000/1",
  RATE_LIMIT_CHAT: "100000/1",
  MAX_STREAMS_PER_USER: "100000",
  MAX_STREAMS_PER_ANONYMOUS_IP: "100000",
};
