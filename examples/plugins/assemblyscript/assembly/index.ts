// A Sentinel plugin built with the public AssemblyScript proxy-wasm SDK
// (@solo-io/proxy-runtime): adds `x-example-request` to requests and `x-example-response`
// to responses (the plugin configuration's text, or "on"), and answers a request that
// carries `x-block: 1` with a 403 of its own, which never reaches the backend.
export * from "@solo-io/proxy-runtime/proxy";
import {
  RootContext,
  Context,
  registerRootContext,
  FilterHeadersStatusValues,
  GrpcStatusValues,
  stream_context,
  send_local_response,
} from "@solo-io/proxy-runtime";

class ExampleRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Example(context_id, this);
  }
}

class Example extends Context {
  constructor(context_id: u32, root_context: ExampleRoot) {
    super(context_id, root_context);
  }

  private value(): string {
    const configured = this.root_context.getConfiguration();
    return configured == "" ? "on" : configured;
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (stream_context.headers.request.get("x-block") == "1") {
      send_local_response(403, "blocked", String.UTF8.encode("blocked by the example plugin"), [], GrpcStatusValues.Unknown);
      return FilterHeadersStatusValues.StopIteration;
    }
    stream_context.headers.request.add("x-example-request", this.value());
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-example-response", this.value());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32) => { return new ExampleRoot(context_id); }, "example");
