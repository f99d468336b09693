import type { DescMethod, DescService } from "@bufbuild/protobuf";
import { ServerReflection as ReflectionV1 } from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ReflectionV1alpha } from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Health } from "../../../gen/health/v1/health_pb.js";
import { AuthService } from "../../../gen/switchboard/auth/v1/auth_pb.js";
import { UserService } from "../../../gen/switchboard/user/v1/user_pb.js";

/**
 * Who may call what — the one place that says it. Every procedure needs a
 * valid access token unless it is listed as public here; some also need a
 * role. Names come from the generated descriptors, so a renamed method
 * fails to compile instead of silently becoming private or public.
 */

/** `package.Service/Method`, as in a URL path and in logs. */
export type Procedure = string;

const procedure = (method: DescMethod): Procedure => `${method.parent.typeName}/${method.name}`;

/** Services anyone may call: health checks and reflection carry no user data. */
const PUBLIC_SERVICES: readonly DescService[] = [Health, ReflectionV1, ReflectionV1alpha];

/** Methods anyone may call: the ways to get an account and a token. */
const PUBLIC_METHODS: readonly DescMethod[] = [
  UserService.method.registerUser,
  AuthService.method.login,
  AuthService.method.refresh,
];

/** Methods that need a role on top of a valid token. */
const REQUIRED_ROLES: ReadonlyArray<readonly [DescMethod, string]> = [
  // Bulk import creates accounts on others' behalf.
  [UserService.method.createUsers, "admin"],
];

/** The access policy as the auth interceptor reads it. */
export interface AccessPolicy {
  isPublic(procedure: Procedure): boolean;
  /** The role a procedure needs, if any. */
  requiredRole(procedure: Procedure): string | undefined;
}

/** Switchboard's access policy. */
export const accessPolicy: AccessPolicy = (() => {
  const publicServices = new Set(PUBLIC_SERVICES.map((s) => s.typeName));
  const publicMethods = new Set(PUBLIC_METHODS.map(procedure));
  const roles = new Map(REQUIRED_ROLES.map(([m, role]) => [procedure(m), role]));
  return {
    isPublic: (p) => publicMethods.has(p) || publicServices.has(p.slice(0, p.indexOf("/"))),
    requiredRole: (p) => roles.get(p),
  };
})();
