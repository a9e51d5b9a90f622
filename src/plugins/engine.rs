//! The one wasmtime `Engine` of the process (its epoch advanced by `watchdog.rs`, what
//! interrupts a callback past its `timeout_ms`), and the compiled modules, cached by the
//! bytes of their file so a reload that did not change a `.wasm` does not compile it again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use wasmtime::{Engine, ExternType, InstancePre, Linker, Module, Val, ValType};

use super::error::PluginError;
use super::host::{HostState, Status};
use super::{abi, wasi, watchdog};

/// Set to `1`, the engine writes a perf map of the plugins' compiled code (guest frames
/// named in `perf report`; docs/BENCHMARKS.md, issue 21's profile).
pub const PERF_MAP_ENV: &str = "SENTINEL_PLUGIN_PERF_MAP";

/// The engine, with epoch interruption on; the watchdog starts with it.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        // Guest frames in `perf report` (a /tmp/perf-PID.map), for profiling a plugin: off
        // unless asked for, since every compiled function is written to the map.
        if std::env::var_os(PERF_MAP_ENV).is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Failure to build the default configuration would be a bug in the build (no
        // compiler for this CPU); the default engine is the best we can still try.
        let engine = Engine::new(&config).unwrap_or_else(|error| {
            tracing::error!(%error, "wasmtime: cannot build the engine; plugins cannot be time-limited");
            Engine::default()
        });
        watchdog::start(engine.clone());
        engine
    })
}

/// What a module file held when it was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    len: u64,
    hash: u64,
}

impl Digest {
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        Digest {
            len: bytes.len() as u64,
            hash: hasher.finish(),
        }
    }
}

/// A compiled module ready to instantiate, with every import linked.
#[derive(Clone)]
pub struct Compiled {
    pub digest: Digest,
    pub pre: InstancePre<HostState>,
    /// Whether the module exports a callback for a request's end (`proxy_on_done`,
    /// `proxy_on_log`, `proxy_on_delete`): without one, the end of a request does not
    /// visit the instance at all.
    pub ends_requests: bool,
}

/// The callbacks a request's end runs (`Vm::finish`).
pub const END_CALLBACKS: [&str; 3] = ["proxy_on_done", "proxy_on_log", "proxy_on_delete"];

/// Compiled modules by file; one entry per path (the last version compiled).
fn cache() -> &'static Mutex<HashMap<PathBuf, Compiled>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Compiled>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The module in `path`, compiled and linked: from the cache when the file's bytes are the
/// ones compiled last time.
pub fn compile(path: &Path) -> Result<Compiled, PluginError> {
    let bytes = std::fs::read(path).map_err(|source| PluginError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let digest = Digest::of(&bytes);
    {
        let cache = cache().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(compiled) = cache.get(path).filter(|c| c.digest == digest) {
            return Ok(compiled.clone());
        }
    }
    let engine = engine();
    let module = Module::new(engine, &bytes).map_err(|e| PluginError::Compile(format!("{e:#}")))?;
    let linker = linker_for(engine, &module).map_err(|e| PluginError::Link(format!("{e:#}")))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| PluginError::Link(format!("{e:#}")))?;
    let ends_requests = module
        .exports()
        .any(|export| END_CALLBACKS.contains(&export.name()));
    let compiled = Compiled {
        digest,
        pre,
        ends_requests,
    };
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    cache.insert(path.to_path_buf(), compiled.clone());
    Ok(compiled)
}

/// The host functions, plus a stub for every other function the module imports from the
/// proxy-wasm or WASI modules: `Unimplemented` (or `ENOSYS`) instead of a failed
/// instantiation, so a module built with any SDK version loads and fails only if it calls
/// what we lack. Other imports stay unresolved: instantiating then says which.
fn linker_for(engine: &Engine, module: &Module) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    abi::link(&mut linker)?;
    wasi::link(&mut linker)?;
    for import in module.imports() {
        let ExternType::Func(ty) = import.ty() else {
            continue;
        };
        let (module_name, name) = (import.module(), import.name());
        let answer = if module_name == "env" && name.starts_with("proxy_") {
            if abi::IMPLEMENTED.contains(&name) {
                continue;
            }
            Status::Unimplemented as i32
        } else if wasi::MODULES.contains(&module_name) {
            if wasi::IMPLEMENTED.contains(&name) {
                continue;
            }
            wasi::ERRNO_NOSYS
        } else if module_name == "env" && name == "abort" {
            // AssemblyScript's `abort(message, file, line, column)`: a trap with its line.
            linker.func_new(module_name, name, ty, |_, params, _| {
                let line = params.get(2).and_then(Val::i32).unwrap_or(0);
                Err(anyhow::anyhow!("the plugin aborted (line {line})"))
            })?;
            continue;
        } else {
            continue;
        };
        let results: Vec<ValType> = ty.results().collect();
        linker.func_new(module_name, name, ty, move |_, _, out| {
            for (slot, kind) in out.iter_mut().zip(&results) {
                *slot = match kind {
                    ValType::I32 => Val::I32(answer),
                    ValType::I64 => Val::I64(i64::from(answer)),
                    ValType::F32 => Val::F32(0),
                    ValType::F64 => Val::F64(0),
                    _ => Val::null_func_ref(),
                };
            }
            Ok(())
        })?;
    }
    Ok(linker)
}
