import type { Interceptor } from "@connectrpc/connect";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { AccessPolicy } from "../auth/policy.js";
import type { Config } from "../config.js";
import type { RequestRules } from "../validation/validation-interceptor.js";
import { validationInterceptor } from "../validation/validation-interceptor.js";
import { accessLogInterceptor } from "./access-log-interceptor.js";
import { authInterceptor, type VerifyAccessToken } from "./auth-interceptor.js";
import type { CallTracker } from "./call-tracker-interceptor.js";
import { errorInterceptor } from "./error-interceptor.js";
import { rateLimitInterceptor } from "./rate-limit-interceptor.js";
import { requestIdInterceptor } from "./request-id-interceptor.js";
import { type StreamQuotas, streamQuotaInterceptor } from "./stream-quota-interceptor.js";
import { timingInterceptor } from "./timing-interceptor.js";

/** What the interceptor chain needs. */
export interface ChainDeps {
  readonly logger: Logger;
  readonly calls: CallTracker;
  readonly verifyAccessToken: VerifyAccessToken;
  readonly policy: AccessPolicy;
  readonly rateLimits: Config["rateLimits"];
  readonly redis?: Redis | undefined;
  readonly requestRules: RequestRules;
  readonly streamQuotas: StreamQuotas;
}

/**
 * THE order of Switchboard's interceptors, outermost first. Each one sees
 * every call kind of every protocol.
 *
 * 1. request id    — every later layer (and every log line) has the id;
 *                    errors leave with it.
 * 2. access log    — one line per call at its end, so it sees rejections by
 *                    everything inside it (auth, limits, validation) with
 *                    the code the client actually gets.
 * 3. call tracker  — caps open streams, lets shutdown drain unary calls.
 * 4. error boundary— a bug anywhere inside becomes Internal + request id.
 * 5. auth          — identity from `authorization: Bearer`; roles.
 * 6. rate limit    — per user (needs auth's identity) or per IP; stricter
 *                    for Login and RegisterUser. Before validation, so
 *                    floods of bad requests are limited too.
 * 7. stream quota  — open streams per user, and per IP for anonymous ones.
 * 8. validation    — every request message against its declared rules.
 * 9. timing        — innermost: `server-timing` is the handler's own time.
 *
 * 1–7 need only the request headers: the protocol engine runs them before
 * it reads a unary request body (its request gate stands between 7 and 8),
 * so a call they refuse never has its body buffered.
 */
export function interceptorChain(deps: ChainDeps): Interceptor[] {
  // Keep HEADER_ONLY_INTERCEPTORS in step with this list.
  return [
    requestIdInterceptor(deps.logger),
    accessLogInterceptor(deps.logger),
    deps.calls.interceptor,
    errorInterceptor(deps.logger),
    authInterceptor(deps.verifyAccessToken, deps.policy),
    rateLimitInterceptor({ limits: deps.rateLimits, redis: deps.redis }),
    streamQuotaInterceptor(deps.streamQuotas),
    validationInterceptor(deps.requestRules),
    timingInterceptor(),
  ];
}

/** How many of the chain's interceptors (the outermost) need only request headers: 1–7 above. */
export const HEADER_ONLY_INTERCEPTORS = 7;
