import type { DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, ServiceImpl } from "@connectrpc/connect";
import { Health } from "../../gen/health/v1/health_pb.js";
import { AuthService } from "../../gen/switchboard/auth/v1/auth_pb.js";
import { ChatService } from "../../gen/switchboard/chat/v1/chat_pb.js";
import { UserService } from "../../gen/switchboard/user/v1/user_pb.js";
import { type HealthState, registerHealth } from "./protocol/health.js";
import { registerReflection } from "./protocol/reflection.js";

/** The service implementations the router serves. */
export interface RouteDeps {
  readonly userService: ServiceImpl<typeof UserService>;
  readonly authService: ServiceImpl<typeof AuthService>;
  readonly chatService: ServiceImpl<typeof ChatService>;
  readonly health: HealthState;
}

/** Every application service, as health checks and reflection list them. */
export const appServices: readonly DescService[] = [UserService, AuthService, ChatService];

/** Wires every service onto the Connect router: the application's, health and reflection. */
export function routes(deps: RouteDeps): (router: ConnectRouter) => void {
  return (router) => {
    router.service(UserService, deps.userService);
    router.service(AuthService, deps.authService);
    router.service(ChatService, deps.chatService);
    registerHealth(router, deps.health);
    registerReflection(router, [...appServices, Health]);
  };
}
