// A Sentinel plugin built with the public AssemblyScript proxy-wasm SDK
// (@solo-io/proxy-runtime 0.1.8): adds `x-example-request` to requests and
// `x-example-response` to responses (the plugin configuration's text, or "on"), and answers
// a request that carries `x-block: 1` with a 403 of its own, which never reaches the backend.
//
// Written for cost as well as for show (bench/plugins.sh measures it; docs/BENCHMARKS.md,
// "Plugins", has the profile):
// - The SDK's own dispatch of HTTP contexts (`proxy_on_context_create` and the callbacks
//   after it, in its exports.ts) builds six or more debug log lines per request, each with a
//   list of every live context, and UTF-8-encodes them whatever level the host keeps: about
//   nine tenths of the guest's time under load. This module therefore exports those
//   callbacks itself and keeps its HTTP contexts in a map of its own; the root context, the
//   configuration, the header calls and the local response are still the SDK's.
// - The field names and the value are UTF-8-encoded once, not on every request as the
//   SDK's string helpers (`stream_context.headers.request.add(string, string)`) would.
export { malloc, free } from "@solo-io/proxy-runtime/malloc";
export {
  proxy_abi_version_0_2_0,
  proxy_on_vm_start,
  proxy_validate_configuration,
  proxy_on_configure,
  proxy_on_tick,
  proxy_on_foreign_function,
  proxy_on_queue_ready,
  proxy_on_http_call_response,
  proxy_on_grpc_receive_initial_metadata,
  proxy_on_grpc_trailing_metadata,
  proxy_on_grpc_receive,
  proxy_on_grpc_close,
} from "@solo-io/proxy-runtime/exports";
import {
  RootContext,
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  send_local_response,
} from "@solo-io/proxy-runtime";
import {
  add_header_map_value,
  get_header_map_value,
  HeaderMapTypeValues,
  ensureRootContext,
  getRootContext,
} from "@solo-io/proxy-runtime/runtime";

const BLOCK = String.UTF8.encode("x-block");
const REQUEST_HEADER = String.UTF8.encode("x-example-request");
const RESPONSE_HEADER = String.UTF8.encode("x-example-response");

class ExampleRoot extends RootContext {
  // The header value, encoded once per configuration.
  value: ArrayBuffer = String.UTF8.encode("on");

  onConfigure(configuration_size: u32): bool {
    const accepted = super.onConfigure(configuration_size);
    const configured = this.getConfiguration();
    this.value = String.UTF8.encode(configured == "" ? "on" : configured);
    return accepted;
  }

  createContext(context_id: u32): Context {
    return new Example(context_id, this);
  }
}

class Example extends Context {
  private root: ExampleRoot;

  constructor(context_id: u32, root_context: ExampleRoot) {
    super(context_id, root_context);
    this.root = root_context;
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const block = get_header_map_value(HeaderMapTypeValues.RequestHeaders, BLOCK);
    if (block.byteLength == 1 && load<u8>(changetype<usize>(block)) == 0x31) {
      send_local_response(403, "blocked", String.UTF8.encode("blocked by the example plugin"), [], GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    add_header_map_value(HeaderMapTypeValues.RequestHeaders, REQUEST_HEADER, this.root.value);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    add_header_map_value(HeaderMapTypeValues.ResponseHeaders, RESPONSE_HEADER, this.root.value);
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new ExampleRoot(context_id); }, "example");

// The HTTP contexts, by id (the root context stays in the SDK's map).
const contexts = new Map<u32, Context>();

export function proxy_on_context_create(context_id: u32, root_context_id: u32): void {
  if (root_context_id == 0) {
    ensureRootContext(context_id);
    return;
  }
  contexts.set(context_id, getRootContext(root_context_id).createContext(context_id));
}

export function proxy_on_request_headers(context_id: u32, headers: u32, end_of_stream: u32): i32 {
  return contexts.get(context_id).onRequestHeaders(headers, end_of_stream != 0) as i32;
}

export function proxy_on_request_body(context_id: u32, size: u32, end_of_stream: u32): i32 {
  return contexts.get(context_id).onRequestBody(size, end_of_stream != 0) as i32;
}

export function proxy_on_response_headers(context_id: u32, headers: u32, end_of_stream: u32): i32 {
  return contexts.get(context_id).onResponseHeaders(headers, end_of_stream != 0) as i32;
}

export function proxy_on_response_body(context_id: u32, size: u32, end_of_stream: u32): i32 {
  return contexts.get(context_id).onResponseBody(size, end_of_stream != 0) as i32;
}

// Nothing to do at a request's end but forget the context: `proxy_on_done` and
// `proxy_on_log` are not exported (the SDK's would log each call), so the host does not
// enter the module for them; a host calls only the callbacks a module exports.
export function proxy_on_delete(context_id: u32): void {
  if (contexts.has(context_id)) {
    contexts.delete(context_id);
  }
}
