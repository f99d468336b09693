import type { Interceptor } from "@connectrpc/connect";
import type { AccessPolicy } from "../auth/policy.js";
import { type AuthInfo, kAuth } from "../context.js";
import { permissionDenied, Reason, unauthenticated } from "../errors.js";
import { procedureOf } from "./procedure.js";

/** Verifies an access token; rejects with Unauthenticated TOKEN_EXPIRED / TOKEN_INVALID. */
export type VerifyAccessToken = (token: string) => Promise<AuthInfo>;

const BEARER = /^Bearer[ ]+([^\s]+)\s*$/i;

/**
 * Authenticates every call from its `authorization: Bearer <token>` metadata
 * — gRPC, gRPC-Web and Connect alike, unary and streaming — following
 * `policy`. Public procedures pass without identity (a token they carry is
 * ignored). Otherwise: no header → TOKEN_MISSING, a header that is not a
 * Bearer token → TOKEN_INVALID, then whatever `verify` says; a missing role
 * is PermissionDenied. The verified identity goes into the call's context
 * values (`kAuth`), where handlers read it.
 */
export function authInterceptor(verify: VerifyAccessToken, policy: AccessPolicy): Interceptor {
  return (next) => async (req) => {
    const procedure = procedureOf(req);
    if (policy.isPublic(procedure)) return next(req);
    const header = req.header.get("authorization");
    if (header === null || header.trim() === "") {
      throw unauthenticated(
        Reason.TOKEN_MISSING,
        "this call needs an access token: send `authorization: Bearer <token>` (AuthService.Login)",
      );
    }
    const match = BEARER.exec(header);
    if (!match) {
      throw unauthenticated(
        Reason.TOKEN_INVALID,
        "the authorization header must be `Bearer <access token>`",
      );
    }
    const auth = await verify(match[1]!);
    const role = policy.requiredRole(procedure);
    if (role !== undefined && !auth.roles.includes(role)) {
      throw permissionDenied(Reason.ROLE_REQUIRED, `${procedure} needs the ${role} role`, { role });
    }
    req.contextValues.set(kAuth, auth);
    return next(req);
  };
}
