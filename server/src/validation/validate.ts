import type { z } from "zod";
import { type FieldViolation, invalidArgument } from "../errors.js";

/**
 * Request validation: one schema layer (zod) instead of ad-hoc checks in
 * handlers. Every problem becomes a `google.rpc.BadRequest` field violation
 * whose `field` is the proto field path in snake_case (`display_name`,
 * `ids[3]`), so clients can show each error under its own input.
 */

/** Turns a zod path (`["displayName"]`, `["ids", 3]`) into a proto field path. */
export function fieldPath(path: readonly PropertyKey[], prefix = ""): string {
  let out = prefix;
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else {
      const snake = String(part).replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
      out += out === "" ? snake : `.${snake}`;
    }
  }
  return out;
}

/** Every violation of `schema` by `value`; empty when it is valid. */
export function violations<S extends z.ZodType>(
  schema: S,
  value: unknown,
  prefix = "",
): FieldViolation[] {
  const result = schema.safeParse(value);
  if (result.success) return [];
  return result.error.issues.map((issue) => ({
    field: fieldPath(issue.path, prefix),
    description: issue.message,
  }));
}

/** Returns `value` parsed by `schema`, or throws InvalidArgument listing every bad field. */
export function validate<S extends z.ZodType>(schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw invalidArgument(
    result.error.issues.map((issue) => ({
      field: fieldPath(issue.path),
      description: issue.message,
    })),
  );
}
