;; The smallest useful proxy-wasm plugin, by hand: adds `x-wat-request: on` to every request
;; and `x-wat-response: on` to every response. No SDK, no runtime, no allocation but the
;; bump allocator the host needs for the data it returns (none here). bench/plugins.sh runs
;; it beside the AssemblyScript sample to tell the host's cost per request from an SDK's.
(module
  (import "env" "proxy_add_header_map_value"
    (func $add (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "malloc") (param $size i32) (result i32) (local $at i32)
    (local.set $at (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $at))
  (func (export "proxy_on_context_create") (param i32 i32)
    (global.set $heap (i32.const 1024)))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (data (i32.const 16) "x-wat-request")
  (data (i32.const 32) "x-wat-response")
  (data (i32.const 48) "on")
  ;; Map 0: request headers; 2: response headers. Continue (0) either way.
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 0) (i32.const 16) (i32.const 13) (i32.const 48) (i32.const 2)))
    (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
    (drop (call $add (i32.const 2) (i32.const 32) (i32.const 14) (i32.const 48) (i32.const 2)))
    (i32.const 0)))
