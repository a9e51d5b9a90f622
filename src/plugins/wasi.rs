//! The few WASI calls the proxy-wasm SDKs pull in (their language runtimes print, read the
//! clock, seed hash maps), under both `wasi_snapshot_preview1` and `wasi_unstable`. A plugin
//! has no files, no environment and no arguments; stdout and stderr become log lines.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Linker};

use super::host::HostState;

/// The WASI module names the SDKs import from.
pub const MODULES: [&str; 2] = ["wasi_snapshot_preview1", "wasi_unstable"];

/// WASI errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
/// What every WASI call not linked here answers (`vm.rs` links them as stubs).
pub const ERRNO_NOSYS: i32 = 52;

/// The names linked here; `vm.rs` stubs every other WASI import.
pub const IMPLEMENTED: &[&str] = &[
    "fd_write",
    "proc_exit",
    "clock_time_get",
    "random_get",
    "environ_sizes_get",
    "environ_get",
    "args_sizes_get",
    "args_get",
    "fd_prestat_get",
];

fn memory_of(caller: &mut Caller<'_, HostState>) -> Option<wasmtime::Memory> {
    caller.data().memory
}

fn write(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> bool {
    match memory_of(caller) {
        Some(memory) => memory
            .write(&mut *caller, ptr as u32 as usize, bytes)
            .is_ok(),
        None => false,
    }
}

fn read_u32(data: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Two zero counts (no environment, no arguments).
fn two_zeros(mut caller: Caller<'_, HostState>, count_out: i32, size_out: i32) -> i32 {
    if write(&mut caller, count_out, &0u32.to_le_bytes())
        && write(&mut caller, size_out, &0u32.to_le_bytes())
    {
        ERRNO_SUCCESS
    } else {
        ERRNO_FAULT
    }
}

/// A small, fast, non-cryptographic generator for `random_get`: the SDKs seed hash maps
/// with it. Seeded from the clock and the thread; a plugin must not rely on it for secrets.
fn random_bytes(out: &mut [u8]) {
    use std::hash::{BuildHasher, Hasher};
    let mut state = std::collections::hash_map::RandomState::new().build_hasher();
    state.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    let mut seed = state.finish() | 1;
    for chunk in out.chunks_mut(8) {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let value = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&value[..chunk.len()]);
    }
}

pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    for module in MODULES {
        linker.func_wrap(
            module,
            "fd_write",
            |mut caller: Caller<'_, HostState>,
             fd: i32,
             iovs: i32,
             iovs_len: i32,
             written_out: i32|
             -> i32 {
                if fd != 1 && fd != 2 {
                    return ERRNO_BADF;
                }
                let Some(memory) = memory_of(&mut caller) else {
                    return ERRNO_FAULT;
                };
                let data = memory.data(&caller);
                let mut text = Vec::new();
                for index in 0..(iovs_len as u32 as usize) {
                    let at = (iovs as u32 as usize).saturating_add(index.saturating_mul(8));
                    let (Some(ptr), Some(len)) = (read_u32(data, at), read_u32(data, at + 4))
                    else {
                        return ERRNO_FAULT;
                    };
                    let (start, len) = (ptr as usize, len as usize);
                    let Some(piece) = start.checked_add(len).and_then(|end| data.get(start..end))
                    else {
                        return ERRNO_FAULT;
                    };
                    text.extend_from_slice(piece);
                }
                let plugin = &*caller.data().plugin.config.name;
                let message = String::from_utf8_lossy(&text);
                let message = message.trim_end();
                if !message.is_empty() {
                    tracing::info!(target: "sentinel::plugin", plugin, fd, %message, "plugin output");
                }
                let written = u32::try_from(text.len()).unwrap_or(u32::MAX);
                if write(&mut caller, written_out, &written.to_le_bytes()) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
        // Exiting ends the callback as a trap: the process does not exit for a plugin.
        linker.func_wrap(
            module,
            "proc_exit",
            |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
                Err(anyhow::anyhow!("the plugin called proc_exit({code})"))
            },
        )?;
        linker.func_wrap(
            module,
            "clock_time_get",
            |mut caller: Caller<'_, HostState>, clock: i32, _precision: i64, out: i32| -> i32 {
                // 0: realtime; 1: monotonic (any steady origin will do, the epoch is one).
                if !(0..=3).contains(&clock) {
                    return ERRNO_INVAL;
                }
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                if write(&mut caller, out, &now.to_le_bytes()) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
        linker.func_wrap(
            module,
            "random_get",
            |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> i32 {
                // Bounded by the guest's memory before anything is allocated: a plugin must
                // not make the host allocate gigabytes with one call.
                let (start, len) = (ptr as u32 as usize, len as u32 as usize);
                let size = memory_of(&mut caller).map_or(0, |m| m.data_size(&caller));
                if start.checked_add(len).is_none_or(|end| end > size) {
                    return ERRNO_FAULT;
                }
                let mut bytes = vec![0u8; len];
                random_bytes(&mut bytes);
                if write(&mut caller, ptr, &bytes) {
                    ERRNO_SUCCESS
                } else {
                    ERRNO_FAULT
                }
            },
        )?;
        linker.func_wrap(module, "environ_sizes_get", two_zeros)?;
        linker.func_wrap(module, "args_sizes_get", two_zeros)?;
        linker.func_wrap(module, "environ_get", |_: i32, _: i32| ERRNO_SUCCESS)?;
        linker.func_wrap(module, "args_get", |_: i32, _: i32| ERRNO_SUCCESS)?;
        // No preopened directories: the answer that ends a runtime's enumeration of them.
        linker.func_wrap(module, "fd_prestat_get", |_: i32, _: i32| ERRNO_BADF)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_fill_odd_lengths() {
        let mut bytes = [0u8; 13];
        random_bytes(&mut bytes);
        assert!(bytes.iter().any(|b| *b != 0));
    }
}
