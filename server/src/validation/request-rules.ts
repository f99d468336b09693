import {
  LoginRequestSchema,
  LogoutRequestSchema,
  RefreshRequestSchema,
} from "../../../gen/switchboard/auth/v1/auth_pb.js";
import * as auth from "./auth-rules.js";
import { chatRequestExemptions, chatRequestSchemas } from "./chat-rules.js";
import { userRequestExemptions, userRequestSchemas } from "./user-requests.js";
import { requestRules } from "./validation-interceptor.js";

/** The rules for every request message Switchboard serves, in one place. */
export const appRequestRules = requestRules(
  [
    ...userRequestSchemas,
    [LoginRequestSchema, auth.loginRequest],
    [RefreshRequestSchema, auth.refreshRequest],
    [LogoutRequestSchema, auth.logoutRequest],
    ...chatRequestSchemas,
  ],
  [...userRequestExemptions, ...chatRequestExemptions],
);
