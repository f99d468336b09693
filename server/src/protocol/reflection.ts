import {
  type DescEnum,
  type DescExtension,
  type DescFile,
  type DescMessage,
  type DescService,
  toBinary,
} from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ConnectRouter } from "@connectrpc/connect";
import { file_google_rpc_error_details } from "../../../gen/google/rpc/error_details_pb.js";
import { ServerReflection as ServerReflectionV1 } from "../../../gen/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), answered from the
 * descriptors protoc-gen-es embeds in generated code, so tools such as
 * grpcurl, buf curl and Postman can call the server without a copy of the
 * .proto files.
 *
 * The embedded descriptors match `buf build --exclude-source-info` for
 * everything a client needs to encode and decode messages (fields, json
 * names, options, dependencies); only source info, i.e. comments, is missing.
 */

/**
 * Files served besides the services' own: the types of the error details
 * Switchboard sends (`google.rpc.BadRequest`, `ErrorInfo`, `RetryInfo`,
 * `QuotaFailure`, …), so that grpcurl and buf curl can decode the details in
 * `grpc-status-details-bin` without a copy of the protos.
 */
export const ERROR_DETAIL_FILES: readonly DescFile[] = [file_google_rpc_error_details];

/**
 * A reflection request as both API versions shape it. The two generated
 * request types differ only in their `$typeName`s, so one engine serves both.
 */
interface ReflectionRequest {
  readonly messageRequest:
    | {
        readonly case:
          | "fileByFilename"
          | "fileContainingSymbol"
          | "allExtensionNumbersOfType"
          | "listServices";
        readonly value: string;
      }
    | {
        readonly case: "fileContainingExtension";
        readonly value: { readonly containingType: string; readonly extensionNumber: number };
      }
    | { readonly case: undefined; readonly value?: undefined };
}

/**
 * The `message_response` oneof as plain init objects, which both versions'
 * response schemas accept.
 */
type ReflectionAnswer =
  | { case: "fileDescriptorResponse"; value: { fileDescriptorProto: Uint8Array[] } }
  | {
      case: "allExtensionNumbersResponse";
      value: { baseTypeName: string; extensionNumber: number[] };
    }
  | { case: "listServicesResponse"; value: { service: { name: string }[] } }
  | { case: "errorResponse"; value: { errorCode: number; errorMessage: string } };

/**
 * Everything reflection can be asked about, built once at registration: the
 * given services' files plus every file they import, transitively.
 */
class ReflectionIndex {
  /** Sorted, so list_services answers are stable across restarts. */
  readonly serviceNames: readonly string[];
  private readonly files = new Map<string, DescFile>();
  /**
   * Serialized FileDescriptorProtos, encoded eagerly so that a descriptor
   * that cannot be serialized fails at startup rather than mid-session.
   */
  private readonly encoded = new Map<string, Uint8Array>();
  private readonly symbols = new Map<string, DescFile>();
  /** Extendee full name → field number → file declaring the extension. */
  private readonly extensions = new Map<string, Map<number, DescFile>>();
  private readonly messageNames = new Set<string>();

  constructor(services: readonly DescService[], extraFiles: readonly DescFile[]) {
    const names = new Set<string>();
    for (const service of services) {
      names.add(service.typeName);
      this.addFile(service.file);
    }
    for (const file of extraFiles) this.addFile(file);
    this.serviceNames = [...names].sort();
  }

  /**
   * Answers one request. `sent` holds the files already sent on this stream:
   * like grpc-go, the requested file is always sent but its dependencies only
   * once per stream, since clients cache what they have received.
   */
  answer(request: ReflectionRequest, sent: Set<string>): ReflectionAnswer {
    const { messageRequest: req } = request;
    switch (req.case) {
      case "listServices":
        // The spec leaves the list_services value unchecked; clients send "" or "*".
        return {
          case: "listServicesResponse",
          value: { service: this.serviceNames.map((name) => ({ name })) },
        };
      case "fileByFilename":
        return this.fileAnswer(this.files.get(req.value), sent, `file ${req.value} not found`);
      case "fileContainingSymbol":
        return this.fileAnswer(this.symbols.get(req.value), sent, `symbol ${req.value} not found`);
      case "fileContainingExtension": {
        const { containingType, extensionNumber } = req.value;
        return this.fileAnswer(
          this.extensions.get(containingType)?.get(extensionNumber),
          sent,
          `extension ${extensionNumber} of ${containingType} not found`,
        );
      }
      case "allExtensionNumbersOfType": {
        // A known message without extensions gets an empty list, an unknown
        // name NOT_FOUND, as grpc-go answers.
        if (!this.messageNames.has(req.value)) {
          return notFound(`message type ${req.value} not found`);
        }
        const numbers = [...(this.extensions.get(req.value)?.keys() ?? [])].sort((a, b) => a - b);
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: req.value, extensionNumber: numbers },
        };
      }
      default:
        // An unset oneof is also what a request kind newer than this server
        // decodes to, hence UNIMPLEMENTED (as grpc-java answers) rather than
        // ending the stream.
        return {
          case: "errorResponse",
          value: { errorCode: Code.Unimplemented, errorMessage: "unsupported reflection request" },
        };
    }
  }

  private fileAnswer(
    root: DescFile | undefined,
    sent: Set<string>,
    missing: string,
  ): ReflectionAnswer {
    if (root === undefined) {
      return notFound(missing);
    }
    const out: Uint8Array[] = [];
    // Breadth-first, root first: clients take the first file as the answer.
    const queue: DescFile[] = [root];
    const seen = new Set<string>();
    for (let file = queue.shift(); file !== undefined; file = queue.shift()) {
      const name = file.proto.name;
      if (seen.has(name)) continue;
      seen.add(name);
      if (file === root || !sent.has(name)) {
        sent.add(name);
        out.push(this.encoded.get(name)!);
      }
      queue.push(...file.dependencies);
    }
    return { case: "fileDescriptorResponse", value: { fileDescriptorProto: out } };
  }

  private addFile(file: DescFile): void {
    const name = file.proto.name;
    // First one wins: a second DescFile of the same name would be a duplicate
    // copy of generated code, not a different schema.
    if (this.files.has(name)) return;
    this.files.set(name, file);
    this.encoded.set(name, toBinary(FileDescriptorProtoSchema, file.proto));
    for (const service of file.services) {
      this.addSymbol(service.typeName, file);
      for (const method of service.methods) {
        this.addSymbol(`${service.typeName}.${method.name}`, file);
      }
    }
    for (const message of file.messages) this.addMessage(message);
    for (const e of file.enums) this.addEnum(e);
    for (const ext of file.extensions) this.addExtension(ext);
    for (const dep of file.dependencies) this.addFile(dep);
  }

  private addMessage(message: DescMessage): void {
    this.addSymbol(message.typeName, message.file);
    this.messageNames.add(message.typeName);
    for (const field of message.fields) {
      this.addSymbol(`${message.typeName}.${field.name}`, message.file);
    }
    // The proto's list includes proto3 optional's synthetic oneofs, which
    // protobuf-go (and so grpc-go reflection) resolves too.
    for (const oneof of message.proto.oneofDecl) {
      this.addSymbol(`${message.typeName}.${oneof.name}`, message.file);
    }
    for (const nested of message.nestedMessages) this.addMessage(nested);
    for (const e of message.nestedEnums) this.addEnum(e);
    for (const ext of message.nestedExtensions) this.addExtension(ext);
  }

  private addEnum(e: DescEnum): void {
    this.addSymbol(e.typeName, e.file);
    // Enum values are siblings of their enum in protobuf's scoping (C++
    // rules): pkg.Enum's value V is pkg.V, not pkg.Enum.V.
    const scope = e.typeName.slice(0, e.typeName.lastIndexOf(".") + 1);
    for (const value of e.values) {
      this.addSymbol(scope + value.name, e.file);
    }
  }

  private addExtension(ext: DescExtension): void {
    this.addSymbol(ext.typeName, ext.file);
    let byNumber = this.extensions.get(ext.extendee.typeName);
    if (byNumber === undefined) {
      byNumber = new Map();
      this.extensions.set(ext.extendee.typeName, byNumber);
    }
    if (!byNumber.has(ext.number)) byNumber.set(ext.number, ext.file);
  }

  private addSymbol(name: string, file: DescFile): void {
    if (!this.symbols.has(name)) this.symbols.set(name, file);
  }
}

function notFound(message: string): ReflectionAnswer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: message } };
}

/**
 * Registers `grpc.reflection.v1.ServerReflection` and
 * `grpc.reflection.v1alpha.ServerReflection` on `router`. Both describe
 * `services`, the files declaring them and everything those files import;
 * list_services names `services` plus the two reflection services.
 *
 * Call it with every service the router serves; reflection cannot see what
 * else is registered on the router. Errors (unknown file, symbol or
 * extension) are answered in-stream as `error_response` with NOT_FOUND and
 * the stream stays open; each request gets exactly one response, echoing
 * `valid_host` and `original_request`.
 *
 * @example
 * routes: (router) => {
 *   router.service(UserService, userImpl);
 *   registerReflection(router, [UserService]);
 * }
 */
export function registerReflection(
  router: ConnectRouter,
  services: readonly DescService[],
  extraFiles: readonly DescFile[] = ERROR_DETAIL_FILES,
): void {
  const index = new ReflectionIndex(
    [...services, ServerReflectionV1, ServerReflectionV1Alpha],
    extraFiles,
  );
  router.service(ServerReflectionV1, {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const request of requests) {
        yield {
          validHost: request.host,
          originalRequest: request,
          messageResponse: index.answer(request, sent),
        };
      }
    },
  });
  router.service(ServerReflectionV1Alpha, {
    async *serverReflectionInfo(requests) {
      const sent = new Set<string>();
      for await (const request of requests) {
        yield {
          validHost: request.host,
          originalRequest: request,
          messageResponse: index.answer(request, sent),
        };
      }
    },
  });
}
