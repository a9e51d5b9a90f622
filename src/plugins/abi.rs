//! The proxy-wasm host functions (ABI 0.2.0/0.2.1, module `env`), linked into every plugin.
//! Each reads its arguments from the guest's memory and answers with a `WasmResult` code;
//! returned data goes into memory the guest allocates (`malloc` or
//! `proxy_on_memory_allocate`). Imports not implemented here are linked by `vm.rs` as stubs
//! answering `Unimplemented`, so a module built with any SDK instantiates.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::host::{
    deserialize_map, property, serialize_map, BufferKind, HostState, LocalResponse, MapKind, Status,
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

/// Guest pointers and sizes are unsigned 32-bit values passed as `i32`.
fn offset(value: i32) -> usize {
    value as u32 as usize
}

/// `len` bytes of guest memory at `ptr`, copied out.
fn read(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let memory = caller.data().memory?;
    let start = offset(ptr);
    let end = start.checked_add(offset(len))?;
    memory.data(&*caller).get(start..end).map(<[u8]>::to_vec)
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

/// Copy `bytes` into memory the guest allocates, and its address and length to the two
/// return pointers. The allocator's trap is the callback's.
fn return_bytes(
    caller: &mut Caller<'_, HostState>,
    bytes: &[u8],
    ptr_out: i32,
    len_out: i32,
) -> HostResult {
    let Ok(len) = i32::try_from(bytes.len()) else {
        return code(Status::BadArgument);
    };
    // Taken out for the call (the guest may call back into the host meanwhile) and put
    // back: no lookup by name, no clone of its type per call.
    let Some(allocate) = caller.data_mut().allocate.take() else {
        return code(Status::InvalidMemoryAccess);
    };
    let allocated = allocate.call(&mut *caller, len);
    caller.data_mut().allocate = Some(allocate);
    let address = allocated?;
    if (address == 0 && len != 0)
        || !write(caller, address, bytes)
        || !write_u32(caller, ptr_out, address as u32)
        || !write_u32(caller, len_out, len as u32)
    {
        return code(Status::InvalidMemoryAccess);
    }
    code(Status::Ok)
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
            // below the process's most verbose level, the message is not even copied.
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
            let Some(message) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let plugin = &*caller.data().plugin.config.name;
            let message = String::from_utf8_lossy(&message);
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
            let state = caller.data();
            let buffer: &[u8] = match kind {
                BufferKind::VmConfiguration => &state.plugin.config.vm_configuration,
                BufferKind::PluginConfiguration => &state.plugin.config.configuration,
                BufferKind::RequestBody => match &state.http {
                    Some(http) => &http.request_body,
                    None => return code(Status::NotFound),
                },
                BufferKind::ResponseBody => match &state.http {
                    Some(http) => &http.response_body,
                    None => return code(Status::NotFound),
                },
            };
            let start = offset(start).min(buffer.len());
            let end = start.saturating_add(offset(max)).min(buffer.len());
            if start == end {
                return code(Status::NotFound);
            }
            let bytes = buffer[start..end].to_vec();
            return_bytes(&mut caller, &bytes, ptr_out, len_out)
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
            let Some(data) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let Some(http) = caller.data_mut().http.as_mut() else {
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
            buffer.splice(start..end, data);
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
            let len = match (BufferKind::from_abi(kind), caller.data().http.as_ref()) {
                (Some(BufferKind::RequestBody), Some(http)) => http.request_body.len(),
                (Some(BufferKind::ResponseBody), Some(http)) => http.response_body.len(),
                (Some(BufferKind::VmConfiguration), _) => {
                    caller.data().plugin.config.vm_configuration.len()
                }
                (Some(BufferKind::PluginConfiguration), _) => {
                    caller.data().plugin.config.configuration.len()
                }
                _ => return code(Status::NotFound),
            };
            let len = u32::try_from(len).unwrap_or(u32::MAX);
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
            let Some(path) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let state = caller.data();
            match property(&path, &state.plugin.config, state.http.as_ref()) {
                Some(value) => return_bytes(&mut caller, &value, ptr_out, len_out),
                None => code(Status::NotFound),
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
            let Some(key) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let found = caller.data().plugin.shared_data.get(&text(&key));
            let Some((value, cas)) = found else {
                return code(Status::NotFound);
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
            let (Some(key), Some(value)) = (
                read(&mut caller, ptr, len),
                read(&mut caller, value_ptr, value_len),
            ) else {
                return code(Status::InvalidMemoryAccess);
            };
            let shared = &caller.data().plugin.shared_data;
            code(shared.set(&text(&key), value, cas as u32))
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
            let (Some(body), Some(headers)) = (
                read(&mut caller, body_ptr, body_len),
                read(&mut caller, headers_ptr, headers_len),
            ) else {
                return code(Status::InvalidMemoryAccess);
            };
            let headers = if headers.is_empty() {
                Vec::new()
            } else {
                match deserialize_map(&headers) {
                    Some(headers) => headers,
                    None => return code(Status::SerializationFailure),
                }
            };
            let Ok(status) = u16::try_from(status) else {
                return code(Status::BadArgument);
            };
            let Some(http) = caller.data_mut().http.as_mut() else {
                return code(Status::NotFound);
            };
            http.local_response = Some(LocalResponse {
                status,
                body,
                headers,
            });
            code(Status::Ok)
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
            let bytes = match caller.data().http.as_ref().and_then(|h| h.map(kind)) {
                Some(map) => serialize_map(map.iter().map(|(k, v)| (k.as_bytes(), &v[..]))),
                None => serialize_map(std::iter::empty()),
            };
            return_bytes(&mut caller, &bytes, ptr_out, len_out)
        },
    )?;
    linker.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut caller: Caller<'_, HostState>, kind: i32, ptr: i32, len: i32| -> HostResult {
            let Some(kind) = MapKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            let Some(bytes) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let Some(pairs) = deserialize_map(&bytes) else {
                return code(Status::SerializationFailure);
            };
            match caller
                .data_mut()
                .http
                .as_mut()
                .and_then(|h| h.map_mut(kind))
            {
                Some(map) => {
                    *map = pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v))
                        .collect();
                    code(Status::Ok)
                }
                None => code(Status::NotFound),
            }
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
            let Some(kind) = MapKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            let Some(key) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let value = caller
                .data()
                .http
                .as_ref()
                .and_then(|h| h.map(kind))
                .and_then(|map| {
                    map.iter()
                        .find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(&key))
                        .map(|(_, value)| value.clone())
                });
            match value {
                Some(value) => return_bytes(&mut caller, &value, ptr_out, len_out),
                None => code(Status::NotFound),
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
                let Some(kind) = MapKind::from_abi(kind) else {
                    return code(Status::BadArgument);
                };
                let (Some(key), Some(value)) = (
                    read(&mut caller, ptr, len),
                    read(&mut caller, value_ptr, value_len),
                ) else {
                    return code(Status::InvalidMemoryAccess);
                };
                let key = text(&key).to_ascii_lowercase();
                let Some(map) = caller
                    .data_mut()
                    .http
                    .as_mut()
                    .and_then(|h| h.map_mut(kind))
                else {
                    return code(Status::NotFound);
                };
                if replace {
                    map.retain(|(name, _)| *name != key);
                }
                map.push((key, value));
                code(Status::Ok)
            },
        )?;
    }
    linker.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut caller: Caller<'_, HostState>, kind: i32, ptr: i32, len: i32| -> HostResult {
            let Some(kind) = MapKind::from_abi(kind) else {
                return code(Status::BadArgument);
            };
            let Some(key) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
            };
            let Some(map) = caller
                .data_mut()
                .http
                .as_mut()
                .and_then(|h| h.map_mut(kind))
            else {
                return code(Status::NotFound);
            };
            map.retain(|(name, _)| !name.as_bytes().eq_ignore_ascii_case(&key));
            code(Status::Ok)
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
            let Some(name) = read(&mut caller, ptr, len) else {
                return code(Status::InvalidMemoryAccess);
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
