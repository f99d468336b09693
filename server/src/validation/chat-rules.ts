import { z } from "zod";
import {
  ChatRequestSchema,
  HistoryRequestSchema,
  SendRequestSchema,
  SubscribeRequestSchema,
} from "../../../gen/switchboard/chat/v1/chat_pb.js";

/**
 * The rules for chat requests. Messages are written for people: the web app
 * and CLI show them verbatim, and the bidi Chat call puts them in
 * FrameError.message.
 */

/** Longest message, in characters (Unicode code points, not UTF-16 units). */
export const MAX_TEXT_CHARS = 2000;
/** Longest client message id, in characters. */
export const MAX_CLIENT_MSG_ID_CHARS = 64;
/** Largest History page; 0 asks for the default. */
export const MAX_PAGE_SIZE = 200;
export const DEFAULT_PAGE_SIZE = 50;

/** Characters as people count them (code points), so an emoji counts once. */
export function charCount(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: rejecting control characters is the point
const CONTROL = /[\u0000-\u001f\u007f]/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: tab, newline and carriage return stay allowed
const CONTROL_BUT_LINE_BREAKS_AND_TABS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** 1–64 characters: lowercase letters, digits, '-' or '_', starting with a letter or digit. */
export const room = z
  .string()
  .min(1, "is required")
  .max(64, "must be at most 64 characters")
  .regex(
    /^[a-z0-9][a-z0-9_-]*$/,
    "may contain only lowercase letters, digits, '-' and '_', and must start with a letter or digit",
  );

/**
 * 1–2000 characters, not only whitespace; stored exactly as sent (not
 * trimmed). Line breaks and tabs are allowed, other control characters not.
 */
export const text = z.string().superRefine((value, ctx) => {
  if (value.trim() === "") {
    ctx.addIssue({ code: "custom", message: value === "" ? "is required" : "must not be blank" });
  } else if (charCount(value) > MAX_TEXT_CHARS) {
    ctx.addIssue({ code: "custom", message: `must be at most ${MAX_TEXT_CHARS} characters` });
  } else if (CONTROL_BUT_LINE_BREAKS_AND_TABS.test(value)) {
    ctx.addIssue({ code: "custom", message: "must not contain control characters" });
  }
});

/** 1–64 characters, no control characters (a UUID, a counter, …). */
export const clientMsgId = z.string().superRefine((value, ctx) => {
  if (value === "") ctx.addIssue({ code: "custom", message: "is required" });
  else if (charCount(value) > MAX_CLIENT_MSG_ID_CHARS) {
    ctx.addIssue({
      code: "custom",
      message: `must be at most ${MAX_CLIENT_MSG_ID_CHARS} characters`,
    });
  } else if (CONTROL.test(value)) {
    ctx.addIssue({ code: "custom", message: "must not contain control characters" });
  }
});

/** A message id as a cursor (uint64 on the wire; ids beyond 2^53 cannot exist here). */
export const messageId = z
  .bigint()
  .min(0n, "must not be negative")
  .max(BigInt(Number.MAX_SAFE_INTEGER), "is not a message id this server issued");

/** 0 (the default, 50) to 200. */
export const pageSize = z
  .number()
  .int("must be an integer")
  .min(0, `must be between 0 and ${MAX_PAGE_SIZE}`)
  .max(MAX_PAGE_SIZE, `must be between 0 and ${MAX_PAGE_SIZE}`);

/** SubscribeRequest, and the bidi Chat call's Join frame. */
export const subscribeRequest = z.object({ room, afterId: messageId });
export const join = subscribeRequest;

/** SendRequest, and the bidi Chat call's SendMessage frame. */
export const sendRequest = z.object({ room, clientMsgId, text });
export const sendMessage = sendRequest;

/** The bidi Chat call's Leave frame. */
export const leave = z.object({ room });

/** HistoryRequest. */
export const historyRequest = z.object({ room, beforeId: messageId, pageSize });

/** ChatService's request rules, for `requestRules` (validated by the interceptor). */
export const chatRequestSchemas = [
  [SubscribeRequestSchema, subscribeRequest],
  [SendRequestSchema, sendRequest],
  [HistoryRequestSchema, historyRequest],
] as const;

/** ChatService's request types that their handler validates frame by frame. */
export const chatRequestExemptions = [
  [
    ChatRequestSchema,
    "Chat answers a bad frame with a FrameError and the stream goes on (chat-service.ts validates each frame with the rules above)",
  ],
] as const;
