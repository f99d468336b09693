import { type Logger, pino } from "pino";
import type { Config } from "./config.js";

/**
 * The process logger: JSON lines on stdout (what log shippers want), or
 * pino-pretty for people in development. Secrets never reach it: request
 * headers are not logged wholesale anywhere.
 */
export function createLogger(log: Config["log"]): Logger {
  return pino({
    level: log.level,
    base: { service: "switchboard" },
    ...(log.pretty
      ? { transport: { target: "pino-pretty", options: { translateTime: "SYS:HH:MM:ss.l" } } }
      : {}),
  });
}
