import { z } from "zod";
import {
  CreateUsersRequestSchema,
  GetUserRequestSchema,
  GetUserStreamRequestSchema,
  RegisterUserRequestSchema,
  WatchUsersRequestSchema,
} from "../../../gen/switchboard/user/v1/user_pb.js";
import * as rules from "./user-rules.js";

/** UserService's request rules, for `requestRules`. */
export const userRequestSchemas = [
  [RegisterUserRequestSchema, rules.newUser],
  [GetUserRequestSchema, rules.getUser],
  [GetUserStreamRequestSchema, rules.userIds],
  [WatchUsersRequestSchema, z.object({ afterCursor: z.string().max(256, "is too long") })],
] as const;

/** UserService's request types that their handler validates item by item. */
export const userRequestExemptions = [
  [
    CreateUsersRequestSchema,
    "CreateUsers reports each bad item in its summary instead of failing the import",
  ],
] as const;
