// A Sentinel plugin built with the public AssemblyScript proxy-wasm SDK
// (@solo-io/proxy-runtime): adds `x-example-request` to requests and `x-example-response`
// to responses (the plugin configuration's text, or "on"), and answers a request that
// carries `x-block: 1` with a 403 of its own, which never reaches the backend.
//
// Written for cost as well as for show (bench/plugins.sh measures it, docs/BENCHMARKS.md):
// the field names and the value are UTF-8-encoded once, not on every request as the SDK's
// string helpers (`stream_context.headers.request.add(string, string)`) would, and the
// end-of-request callbacks are overridden because the SDK's defaults build a debug log line
// each, on every request, whatever level the host keeps.
export * from "@solo-io/proxy-runtime/proxy";
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

  // Nothing to do at the end of a request; the SDK's defaults would log it (see above).
  onDone(): bool {
    return true;
  }

  onLog(): void {}

  onDelete(): void {}
}

registerRootContext((context_id: u32) => { return new ExampleRoot(context_id); }, "example");
