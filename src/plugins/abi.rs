//! The proxy-wasm host functions (ABI 0.2.0/0.2.1, module `env`), linked into every plugin.
//! Each reads its arguments from the guest's memory and answers with a `WasmResult` code;
//! returned data goes into memory the guest allocates (`malloc` or
//! `proxy_on_memory_allocate`). Imports not implemented here are linked by `vm.rs` as stubs
//! answering `Unimplemented`, so a module built with any SDK instantiates.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use bytes::Bytes;

use super::host::{
    deserialize_map, find_field, property, serialize_map_into, serialized_map_len, BufferKind,
    HeaderMap, HostState, LocalResponse, MapKind, Status,
};
use super::metrics::MetricKind;

/// What a host function returns: a status for the guest, or an error that traps it (a
/// failed allocation in the guest, say).
type HostResult = wasmtime::Result<i32>;

/// The names linked here; `vm.rs` stubs every other `proxy_*` import.
pub const IMPLEMENTED: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_buffer_status",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_add_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_get_header_map_size",
    "proxy_get_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_continue_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_close_stream",
    "proxy_send_local_response",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
];

fn code(status: Status) -> HostResult {
    Ok(status as i32)
}

/// A host call's answer where no trap can come: `Err` is a call refused early (a bad
/// argument, memory out of bounds), so each call's prologue is a `?`.
type Answer = Result<Status, Status>;

fn answer(answer: Answer) -> HostResult {
    code(answer.unwrap_or_else(|refused| refused))
}

/// Guest pointers and sizes are unsigned 32-bit values passed as `i32`.
fn offset(value: i32) -> usize {
    value as u32 as usize
}

/// The `len` bytes at `ptr` in `memory`.
fn guest_slice(memory: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    let start = offset(ptr);
    let end = start.checked_add(offset(len));
    end.and_then(|end| memory.get(start..end))
        .ok_or(Status::InvalidMemoryAccess)
}

/// The guest's memory and the host's state, borrowed together: arguments are read where
/// the guest left them, without a copy, while the state changes.
fn guest<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Result<(&'a mut [u8], &'a mut HostState), Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    Ok(memory.data_and_store_mut(caller))
}

/// `len` bytes of guest memory at `ptr`, copied out (what the host keeps past the call).
fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let (memory, _) = guest(caller)?;
    guest_slice(memory, ptr, len).map(<[u8]>::to_vec)
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(memory) = caller.data().memory else {
        return false;
    };
    memory.write(&mut *caller, offset(ptr), bytes).is_ok()
}

fn write_u32(caller: &mut Caller<'_, HostState>, ptr: i32, value: u32) -> bool {
    write(caller, ptr, &value.to_le_bytes())
}

/// The prologue of the header-map calls: the map `kind` names and the key at `ptr`, read
/// in place, handed to `call` with the rest of guest memory (for a value) and the state.
fn with_map_key<R>(
    caller: &mut Caller<'_, HostState>,
    kind: i32,
    ptr: i32,
    len: i32,
    call: impl FnOnce(MapKind, &[u8], &[u8], &mut HostState) -> Result<R, Status>,
) -> Result<R, Status> {
    let kind = MapKind::from_abi(kind).ok_or(Status::BadArgument)?;
    let (memory, state) = guest(caller)?;
    let key = guest_slice(memory, ptr, len)?;
    call(kind, key, memory, state)
}

/// The map `kind` names of the request whose callback runs, to change (`None`: no such map
/// here, as trailers, or no request).
fn map_mut(state: &mut HostState, kind: MapKind) -> Result<&mut HeaderMap, Status> {
    state
        .http
        .as_mut()
        .and_then(|http| http.map_mut(kind))
        .ok_or(Status::NotFound)
}

/// Copy `bytes` into memory the guest allocates, and its address and length to the two
/// return pointers. The allocator's trap is the callback's.
fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    return_with(caller, bytes.len(), ptr_out, len_out, |out, _| {
        out.copy_from_slice(bytes);
        Some(())
    })
}

/// Memory the guest allocates for `len` bytes, filled in place by `fill` from the state
/// (no copy of the host's own first), and its address and length written to the two return
/// pointers. The guest's allocator runs in between and may call back into the host, so
/// `fill` checks that what it writes is still `len` long (`None`: it is not).
fn return_with(
    caller: &mut Caller<'_, HostState>,
    len: usize,
    ptr_out: i32,
    len_out: i32,
    fill: impl FnOnce(&mut [u8], &HostState) -> Option<()>,
) -> HostResult {
    let Ok(len_i32) = i32::try_from(len) else {
        return code(Status::BadArgument);
    };
    // Taken out for the call (the guest may call back into the host meanwhile) and put
    // back: no lookup by name, no clone of its type per call.
    let Some(allocate) = caller.data_mut().allocate.take() else {
        return code(Status::InvalidMemoryAccess);
    };
    let allocated = allocate.call(&mut *caller, len_i32);
    caller.data_mut().allocate = Some(allocate);
    let address = allocated?;
    if address == 0 && len != 0 {
        return code(Status::InvalidMemoryAccess);
    }
    let filled = guest(caller).ok().and_then(|(memory, state)| {
        let start = offset(address);
        let out = memory.get_mut(start..start.checked_add(len)?)?;
        fill(out, state)
    });
    if filled.is_none()
        || !write_u32(caller, ptr_out, address as u32)
        || !write_u32(caller, len_out, len as u32)
    {
        return code(Status::InvalidMemoryAccess);
    }
    code(Status::Ok)
}

/// The bytes of buffer `kind` the guest may read.
fn buffer(state: &HostState, kind: BufferKind) -> Result<&[u8], Status> {
    Ok(match kind {
        BufferKind::VmConfiguration => &state.plugin.config.vm_configuration,
        BufferKind::PluginConfiguration => &state.plugin.config.configuration,
        BufferKind::RequestBody => &state.http.as_ref().ok_or(Status::NotFound)?.request_body,
        BufferKind::ResponseBody => &state.http.as_ref().ok_or(Status::NotFound)?.response_body,
    })
}

fn lower_case(name: &[u8]) -> Bytes {
    let mut name = name.to_vec();
    name.make_ascii_lowercase();
    Bytes::from(name)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Link every implemented host function into `linker`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_log",
        |mut caller: Caller<'_, HostState>, level: i32, ptr: i32, len: i32| -> HostResult {
            // SDKs log a lot at debug level (the AssemblyScript one on every context):
            // below the process's most verbose level, the message is not even read.
            let as_tracing = match level {
                0 => tracing::Level::TRACE,
                1 => tracing::Level::DEBUG,
                2 => tracing::Level::INFO,
                3 => tracing::Level::WARN,
                _ => tracing::Level::ERROR,
            };
            if as_tracing > tracing::level_filters::LevelFilter::current() {
                return code(Status::Ok);
            }
            let (memory, state) = match guest(&mut caller) {
                Ok(guest) => guest,
                Err(status) => return code(status),
            };
            let Ok(message) = guest_slice(memory, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let plugin = &*state.plugin.config.name;
            let message = String::from_utf8_lossy(message);
            // The plugin's levels: trace 0, debug 1, info 2, warn 3, error 4, critical 5.
            match level {
                0 => tracing::trace!(target: "sentinel::plugin", plugin, %message),
                1 => tracing::debug!(target: "sentinel::plugin", plugin, %message),
                2 => tracing::info!(target: "sentinel::plugin", plugin, %message),
                3 => tracing::warn!(target: "sentinel::plugin", plugin, %message),
                _ => tracing::error!(target: "sentinel::plugin", plugin, %message),
            }
            code(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut caller: Caller<'_, HostState>, out: i32| -> HostResult {
            // The level the plugin's messages are really kept at, so an SDK that asks can
            // skip building the others.
            let level = if tracing::enabled!(target: "sentinel::plugin", tracing::Level::TRACE) {
                0
            } else if tracing::enabled!(target: "sentinel::plugin", tracing::Level::DEBUG) {
                1
            } else if tracing::enabled!(target: "sentinel::plugin", tracing::Level::INFO) {
                2
            } else if tracing::enabled!(target: "sentinel::plugin", tracing::Level::WARN) {
                3
            } else {
                4
            };
            if !write_u32(&mut caller, out, level) {
                return code(Status::InvalidMemoryAccess);
            }
            code(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut caller: Caller<'_, HostState>, out: i32| -> HostResult {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            if !write(&mut caller, out, &now.to_le_bytes()) {
                return code(Status::InvalidMemoryAccess);
            }
            code(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut caller: Caller<'_, HostState>, period: i32| -> HostResult {
            caller.data_mut().tick_period_ms = period as u32;
            code(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         max: i32,
         ptr_out: i32,
         len_out: i32|
         -> HostResult {
            let Some(kind) = BufferKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            let range = match buffer(caller.data(), kind) {
                Ok(buffer) => {
                    let start = offset(start).min(buffer.len());
                    start..start.saturating_add(offset(max)).min(buffer.len())
                }
                Err(status) => return code(status),
            };
            if range.is_empty() {
                return code(Status::NotFound);
            }
            // Straight from the buffer into the guest's allocation.
            return_with(&mut caller, range.len(), ptr_out, len_out, |out, state| {
                let bytes = buffer(state, kind).ok()?.get(range)?;
                out.copy_from_slice(bytes);
                Some(())
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> HostResult {
            let (memory, state) = match guest(&mut caller) {
                Ok(guest) => guest,
                Err(status) => return code(status),
            };
            let Ok(data) = guest_slice(memory, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let Some(http) = state.http.as_mut() else {
                return code(Status::NotFound);
            };
            let buffer = match BufferKind::from_abi(kind) {
                Some(BufferKind::RequestBody) => &mut http.request_body,
                Some(BufferKind::ResponseBody) => &mut http.response_body,
                _ => return code(Status::BadArgument),
            };
            // Replaces `size` bytes at `start` (start 0, size >= len: the whole buffer).
            let start = offset(start).min(buffer.len());
            let end = start.saturating_add(offset(size)).min(buffer.len());
            buffer.splice(start..end, data.iter().copied());
            code(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_buffer_status",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         len_out: i32,
         flags_out: i32|
         -> HostResult {
            let Some(kind) = BufferKind::from_abi(kind) else {
                return code(Status::NotFound);
            };
            let len = match buffer(caller.data(), kind) {
                Ok(buffer) => u32::try_from(buffer.len()).unwrap_or(u32::MAX),
                Err(status) => return code(status),
            };
            // Bodies are handed over whole: the flags say end of stream.
            if !write_u32(&mut caller, len_out, len) || !write_u32(&mut caller, flags_out, 1) {
                return code(Status::InvalidMemoryAccess);
            }
            code(Status::Ok)
        },
    )?;
    link_header_maps(linker)?;
    linker.func_wrap(
        "env",
        "proxy_get_property",
        |mut caller: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         ptr_out: i32,
         len_out: i32|
         -> HostResult {
            let value = guest(&mut caller).and_then(|(memory, state)| {
                let path = guest_slice(memory, ptr, len)?;
                property(path, &state.plugin.config, state.http.as_ref()).ok_or(Status::NotFound)
            });
            match value {
                Ok(value) => return_bytes(&mut caller, &value, ptr_out, len_out),
                Err(status) => code(status),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut caller: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         ptr_out: i32,
         len_out: i32,
         cas_out: i32|
         -> HostResult {
            let found = guest(&mut caller).and_then(|(memory, state)| {
                let key = guest_slice(memory, ptr, len)?;
                state
                    .plugin
                    .shared_data
                    .get(&String::from_utf8_lossy(key))
                    .ok_or(Status::NotFound)
            });
            let (value, cas) = match found {
                Ok(found) => found,
                Err(status) => return code(status),
            };
            if !write_u32(&mut caller, cas_out, cas) {
                return code(Status::InvalidMemoryAccess);
            }
            return_bytes(&mut caller, &value, ptr_out, len_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut caller: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         value_ptr: i32,
         value_len: i32,
         cas: i32|
         -> HostResult {
            answer(guest(&mut caller).and_then(|(memory, state)| {
                let key = guest_slice(memory, ptr, len)?;
                let value = guest_slice(memory, value_ptr, value_len)?.to_vec();
                Ok(state
                    .plugin
                    .shared_data
                    .set(&String::from_utf8_lossy(key), value, cas as u32))
            }))
        },
    )?;
    // The request continues when the callback returns: Sentinel runs callbacks to their end
    // and never parks a stream, so resuming one is already done.
    linker.func_wrap("env", "proxy_continue_stream", |_: i32| code(Status::Ok))?;
    linker.func_wrap("env", "proxy_continue_request", || code(Status::Ok))?;
    linker.func_wrap("env", "proxy_continue_response", || code(Status::Ok))?;
    linker.func_wrap("env", "proxy_close_stream", |_: i32| code(Status::Ok))?;
    linker.func_wrap("env", "proxy_done", || code(Status::Ok))?;
    // One context runs at a time per VM: the effective context is always the current one.
    linker.func_wrap("env", "proxy_set_effective_context", |_: i32| {
        code(Status::Ok)
    })?;
    linker.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut caller: Caller<'_, HostState>,
         status: i32,
         _details_ptr: i32,
         _details_len: i32,
         body_ptr: i32,
         body_len: i32,
         headers_ptr: i32,
         headers_len: i32,
         _grpc_status: i32|
         -> HostResult {
            answer(guest(&mut caller).and_then(|(memory, state)| {
                let body = guest_slice(memory, body_ptr, body_len)?.to_vec();
                let headers = guest_slice(memory, headers_ptr, headers_len)?;
                let headers = if headers.is_empty() {
                    Vec::new()
                } else {
                    deserialize_map(headers).ok_or(Status::SerializationFailure)?
                };
                let status = u16::try_from(status).map_err(|_| Status::BadArgument)?;
                let http = state.http.as_mut().ok_or(Status::NotFound)?;
                http.local_response = Some(LocalResponse {
                    status,
                    body,
                    headers,
                });
                Ok(Status::Ok)
            }))
        },
    )?;
    link_metrics(linker)
}

fn link_header_maps(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut caller: Caller<'_, HostState>, kind: i32, ptr_out: i32, len_out: i32| -> HostResult {
            let Some(kind) = MapKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            fn map(state: &HostState, kind: MapKind) -> Option<&HeaderMap> {
                state.http.as_ref().and_then(|h| h.map(kind))
            }
            let empty = HeaderMap::new();
            let len = serialized_map_len(map(caller.data(), kind).unwrap_or(&empty));
            // Serialised straight into the guest's allocation.
            return_with(&mut caller, len, ptr_out, len_out, |out, state| {
                serialize_map_into(map(state, kind).unwrap_or(&empty), out)
            })
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, kind: i32, ptr: i32, len: i32| -> HostResult {
            answer(with_map_key(
                &mut caller,
                kind,
                ptr,
                len,
                |kind, bytes, _, state| {
                    let pairs = deserialize_map(bytes).ok_or(Status::SerializationFailure)?;
                    // Names a plugin gives are lower-cased, as Envoy keeps them.
                    *map_mut(state, kind)? = pairs
                        .into_iter()
                        .map(|(name, value)| (lower_case(&name), value))
                        .collect();
                    Ok(Status::Ok)
                },
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         ptr: i32,
         len: i32,
         ptr_out: i32,
         len_out: i32|
         -> HostResult {
            let value = with_map_key(&mut caller, kind, ptr, len, |kind, key, _, state| {
                let map = state.http.as_ref().and_then(|h| h.map(kind));
                // A share of the value (a count, not a copy), kept across the allocation.
                map.and_then(|map| find_field(map, key))
                    .cloned()
                    .ok_or(Status::NotFound)
            });
            match value {
                Ok(value) => return_bytes(&mut caller, &value, ptr_out, len_out),
                Err(status) => code(status),
            }
        },
    )?;
    for (name, replace) in [
        ("proxy_replace_header_map_value", true),
        ("proxy_add_header_map_value", false),
    ] {
        linker.func_wrap(
            "env",
            name,
            move |mut caller: Caller<'_, HostState>,
                  kind: i32,
                  ptr: i32,
                  len: i32,
                  value_ptr: i32,
                  value_len: i32|
                  -> HostResult {
                answer(with_map_key(
                    &mut caller,
                    kind,
                    ptr,
                    len,
                    |kind, key, memory, state| {
                        let value = guest_slice(memory, value_ptr, value_len)?;
                        let map = map_mut(state, kind)?;
                        if replace {
                            map.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
                        }
                        // Names a plugin gives are lower-cased, as Envoy keeps them.
                        map.push((lower_case(key), Bytes::copy_from_slice(value)));
                        Ok(Status::Ok)
                    },
                ))
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: i32, ptr: i32, len: i32| -> HostResult {
            answer(with_map_key(
                &mut caller,
                kind,
                ptr,
                len,
                |kind, key, _, state| {
                    map_mut(state, kind)?.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
                    Ok(Status::Ok)
                },
            ))
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut caller: Caller<'_, HostState>, kind: i32, out: i32| -> HostResult {
            let Some(kind) = MapKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            let size = caller
                .data()
                .http
                .as_ref()
                .and_then(|h| h.map(kind))
                .map_or(0, |map| {
                    map.iter().map(|(k, v)| k.len() + v.len() + 2).sum()
                });
            if !write_u32(&mut caller, out, u32::try_from(size).unwrap_or(u32::MAX)) {
                return code(Status::InvalidMemoryAccess);
            }
            code(Status::Ok)
        },
    )?;
    Ok(())
}

fn link_metrics(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "proxy_define_metric",
        |mut caller: Caller<'_, HostState>,
         kind: i32,
         ptr: i32,
         len: i32,
         out: i32|
         -> HostResult {
            let Some(kind) = MetricKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            let name = match read(&mut caller, ptr, len) {
                Ok(name) => name,
                Err(status) => return code(status),
            };
            let Some(id) = caller.data().plugin.metrics.define(kind, &text(&name)) else {
                return code(Status::BadArgument);
            };
            if !write_u32(&mut caller, out, id) {
                return code(Status::InvalidMemoryAccess);
            }
            code(Status::Ok)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_increment_metric",
        |caller: Caller<'_, HostState>, id: i32, offset: i64| -> HostResult {
            match caller.data().plugin.metrics.get(id as u32) {
                Some(metric) if metric.kind != MetricKind::Histogram => {
                    metric
                        .value
                        .fetch_add(offset, std::sync::atomic::Ordering::Relaxed);
                    code(Status::Ok)
                }
                Some(_) => code(Status::BadArgument),
                None => code(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_record_metric",
        |caller: Caller<'_, HostState>, id: i32, value: i64| -> HostResult {
            match caller.data().plugin.metrics.get(id as u32) {
                Some(metric) => {
                    metric
                        .value
                        .store(value, std::sync::atomic::Ordering::Relaxed);
                    code(Status::Ok)
                }
                None => code(Status::NotFound),
            }
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_get_metric",
        |mut caller: Caller<'_, HostState>, id: i32, out: i32| -> HostResult {
            let Some(metric) = caller.data().plugin.metrics.get(id as u32) else {
                return code(Status::NotFound);
            };
            let value = metric.value.load(std::sync::atomic::Ordering::Relaxed);
            if !write(&mut caller, out, &value.to_le_bytes()) {
                return code(Status::InvalidMemoryAccess);
            }
            code(Status::Ok)
        },
    )?;
    Ok(())
}
