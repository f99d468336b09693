import type { DescMethod, DescService } from "@bufbuild/protobuf";

const names = new WeakMap<DescMethod, string>();

/**
 * "package.Service/Method" for a call's method, built once per method: the
 * interceptors name the procedure on every call, and a template string per
 * interceptor per call is garbage the unary hot path does not need.
 */
export function procedureOf(call: {
  readonly service: DescService;
  readonly method: DescMethod;
}): string {
  let name = names.get(call.method);
  if (name === undefined) {
    name = `${call.service.typeName}/${call.method.name}`;
    names.set(call.method, name);
  }
  return name;
}
