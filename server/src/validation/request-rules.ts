import { userRequestExemptions, userRequestSchemas } from "./user-requests.js";
import { requestRules } from "./validation-interceptor.js";

/** The rules for every request message Switchboard serves, in one place. */
export const appRequestRules = requestRules([...userRequestSchemas], [...userRequestExemptions]);
