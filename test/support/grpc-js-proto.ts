import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const ROOT = new URL("../../", import.meta.url).pathname;

/**
 * A Switchboard proto (e.g. "switchboard/user/v1/user.proto") loaded for
 * @grpc/grpc-js the way an independent gRPC peer sees it: from proto/ with
 * proto-loader, not from the generated code. Shared by the wire tests, the
 * e2e grpc-js chat peer and the benchmark's grpc-js server and clients.
 */
export function loadProtoPackage(file: string): grpc.GrpcObject {
  const definition = protoLoader.loadSync(file, {
    includeDirs: [join(ROOT, "proto"), join(ROOT, "node_modules", "google-proto-files")],
    keepCase: false,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition);
}
