import type { DescMessage } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import type { z } from "zod";
import { validate } from "./validate.js";

/**
 * Request validation, declared once per message type instead of checked in
 * handlers: a registry maps each request message to its zod schema, and this
 * interceptor validates every request (unary, and each message of a stream)
 * before the handler sees it. A violation is InvalidArgument with a
 * `google.rpc.BadRequest` naming every bad field.
 *
 * Types whose items are judged one by one by their handler (a bulk import
 * reports bad items instead of failing the call) are listed as exempt.
 */
export interface RequestRules {
  /** Schemas by request message type name. */
  readonly schemas: ReadonlyMap<string, z.ZodType>;
  /** Message types deliberately validated by their handler, with the reason. */
  readonly exempt: ReadonlyMap<string, string>;
}

/** Builds a `RequestRules` from `[messageSchema, zodSchema]` pairs. */
export function requestRules(
  schemas: ReadonlyArray<readonly [DescMessage, z.ZodType]>,
  exempt: ReadonlyArray<readonly [DescMessage, string]> = [],
): RequestRules {
  return {
    schemas: new Map(schemas.map(([desc, schema]) => [desc.typeName, schema])),
    exempt: new Map(exempt.map(([desc, why]) => [desc.typeName, why])),
  };
}

/** Validates every request message that has a schema in `rules`. */
export function validationInterceptor(rules: RequestRules): Interceptor {
  return (next) => async (req) => {
    const schema = rules.schemas.get(req.method.input.typeName);
    if (!schema) return next(req);
    if (!req.stream) {
      validate(schema, req.message);
      return next(req);
    }
    const messages = req.message;
    return next({
      ...req,
      message: (async function* () {
        for await (const message of messages) {
          validate(schema, message);
          yield message;
        }
      })(),
    });
  };
}
