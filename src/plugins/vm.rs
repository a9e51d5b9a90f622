//! One plugin instance (a wasmtime store and instance) and its lifecycle: started with
//! `proxy_on_vm_start` and `proxy_on_configure`, then called per request. Each worker
//! thread keeps its own instances (no lock per request); a failed instance is dropped and
//! the next request starts a fresh one.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, TypedFunc, UpdateDeadline, WasmParams, WasmResults};

use super::engine::{engine, Compiled};
use super::error::PluginError;
use super::host::{HostState, HttpData, MemoryLimit, MemoryLimitExceeded, PluginShared};
use super::metrics::FailureReason;
use super::watchdog;

/// The root context's id; HTTP contexts are numbered after it.
const ROOT_CONTEXT_ID: i32 = 1;

/// The callbacks a module exports (each optional but the context creation).
struct Exports {
    on_context_create: TypedFunc<(i32, i32), ()>,
    on_request_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_request_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_response_headers: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_response_body: Option<TypedFunc<(i32, i32, i32), i32>>,
    on_log: Option<TypedFunc<i32, ()>>,
    on_done: Option<TypedFunc<i32, i32>>,
    on_delete: Option<TypedFunc<i32, ()>>,
    on_tick: Option<TypedFunc<i32, ()>>,
}

impl Exports {
    fn http_callback(&self, callback: HttpCallback) -> Option<&TypedFunc<(i32, i32, i32), i32>> {
        match callback {
            HttpCallback::RequestHeaders => self.on_request_headers.as_ref(),
            HttpCallback::RequestBody => self.on_request_body.as_ref(),
            HttpCallback::ResponseHeaders => self.on_response_headers.as_ref(),
            HttpCallback::ResponseBody => self.on_response_body.as_ref(),
        }
    }
}

/// Which HTTP callback to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpCallback {
    RequestHeaders,
    RequestBody,
    ResponseHeaders,
    ResponseBody,
}

/// What a header or body callback asked for (`Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// `Pause` (1): for headers, "send me the body"; for a body, "buffer all of it".
    Pause,
}

pub struct Vm {
    store: Store<HostState>,
    exports: Exports,
    /// Unique per instance, so a context made on one is never used on another.
    pub generation: u64,
    next_context_id: i32,
    shared: Arc<PluginShared>,
    last_tick: Instant,
}

/// Typed export `name`, `None` when absent; an export of the wrong type is an error.
fn export<P: WasmParams, R: WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<HostState>,
    name: &'static str,
) -> Result<Option<TypedFunc<P, R>>, PluginError> {
    match instance.get_func(&mut *store, name) {
        None => Ok(None),
        Some(func) => func
            .typed::<P, R>(&*store)
            .map(Some)
            .map_err(|_| PluginError::ExportType(name)),
    }
}

static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Vm {
    /// Instantiate and start: the runtime's initialiser, the root context, `proxy_on_vm_start`
    /// and `proxy_on_configure` (either refusing fails the start).
    pub fn start(compiled: &Compiled, shared: Arc<PluginShared>) -> Result<Vm, PluginError> {
        let config = &shared.config;
        let state = HostState {
            memory_limit: MemoryLimit {
                max_bytes: config.max_memory_bytes,
            },
            plugin: Arc::clone(&shared),
            http: None,
            tick_period_ms: 0,
            memory: None,
            allocate: None,
            deadline: 0,
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|state| &mut state.memory_limit);
        // The epoch moves only when some callback is overdue (`watchdog.rs`): this one
        // stops if it is, and otherwise runs on to the next move.
        store.epoch_deadline_callback(|store| {
            Ok(if watchdog::now() >= store.data().deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        watchdog::note_budget(config.timeout);
        // The module's start function runs in the instantiation, under the same budget.
        let due = watchdog::deadline(watchdog::now(), config.timeout);
        store.data_mut().deadline = due;
        store.set_epoch_deadline(1);
        let instance = watchdog::watched(due, || compiled.pre.instantiate(&mut store))
            .map_err(|error| classify(&error, "instantiate"))?;
        let Some(memory) = instance.get_memory(&mut store, "memory") else {
            return Err(PluginError::MissingExport("memory"));
        };
        let allocate = match export::<i32, i32>(&instance, &mut store, "malloc")? {
            Some(malloc) => malloc,
            None => export::<i32, i32>(&instance, &mut store, "proxy_on_memory_allocate")?.ok_or(
                PluginError::MissingExport("malloc or proxy_on_memory_allocate"),
            )?,
        };
        store.data_mut().memory = Some(memory);
        store.data_mut().allocate = Some(allocate);
        let Some(on_context_create) = export(&instance, &mut store, "proxy_on_context_create")?
        else {
            return Err(PluginError::MissingExport("proxy_on_context_create"));
        };
        let exports = Exports {
            on_context_create,
            on_request_headers: export(&instance, &mut store, "proxy_on_request_headers")?,
            on_request_body: export(&instance, &mut store, "proxy_on_request_body")?,
            on_response_headers: export(&instance, &mut store, "proxy_on_response_headers")?,
            on_response_body: export(&instance, &mut store, "proxy_on_response_body")?,
            on_log: export(&instance, &mut store, "proxy_on_log")?,
            on_done: export(&instance, &mut store, "proxy_on_done")?,
            on_delete: export(&instance, &mut store, "proxy_on_delete")?,
            on_tick: export(&instance, &mut store, "proxy_on_tick")?,
        };
        let initialize =
            export::<(), ()>(&instance, &mut store, "_initialize")?
                .or(export::<(), ()>(&instance, &mut store, "_start")?);
        let on_vm_start = export::<(i32, i32), i32>(&instance, &mut store, "proxy_on_vm_start")?;
        let on_configure = export::<(i32, i32), i32>(&instance, &mut store, "proxy_on_configure")?;
        let mut vm = Vm {
            store,
            exports,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            next_context_id: ROOT_CONTEXT_ID + 1,
            shared,
            last_tick: Instant::now(),
        };
        let timeout = vm.shared.config.timeout;
        if let Some(initialize) = initialize {
            call_in(&mut vm.store, timeout, &initialize, ())?;
        }
        vm.call(|e| Some(&e.on_context_create), (ROOT_CONTEXT_ID, 0))?;
        let vm_configuration = len_i32(vm.shared.config.vm_configuration.len());
        if let Some(on_vm_start) = on_vm_start {
            let started = (ROOT_CONTEXT_ID, vm_configuration);
            if call_in(&mut vm.store, timeout, &on_vm_start, started)? == 0 {
                return Err(PluginError::Refused("proxy_on_vm_start"));
            }
        }
        let configuration = len_i32(vm.shared.config.configuration.len());
        if let Some(on_configure) = on_configure {
            let configured = (ROOT_CONTEXT_ID, configuration);
            if call_in(&mut vm.store, timeout, &on_configure, configured)? == 0 {
                return Err(PluginError::Refused("proxy_on_configure"));
            }
        }
        Ok(vm)
    }

    /// Run `func` under the plugin's time budget. The `TypedFunc`s stay borrowed where they
    /// are: cloning one clones its registered type (a lock and a reference count), which
    /// the profile of bench/plugins.sh showed at several percent of a request.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        func: impl Fn(&Exports) -> Option<&TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>, PluginError> {
        let Vm {
            store,
            exports,
            shared,
            ..
        } = self;
        match func(exports) {
            Some(func) => call_in(store, shared.config.timeout, func, params).map(Some),
            None => Ok(None),
        }
    }

    /// A new HTTP context (child of the root); its id.
    pub fn create_context(&mut self) -> Result<i32, PluginError> {
        let id = self.next_context_id;
        // Ids wrap long after any context ended; 0 and the root's are never reused.
        self.next_context_id = match id.checked_add(1) {
            Some(next) => next,
            None => ROOT_CONTEXT_ID + 1,
        };
        self.call(|e| Some(&e.on_context_create), (id, ROOT_CONTEXT_ID))?;
        Ok(id)
    }

    /// Whether the module exports the callback at all (an absent one is not called).
    pub fn has(&self, callback: HttpCallback) -> bool {
        self.exports.http_callback(callback).is_some()
    }

    /// Run an HTTP callback with the request's data in the store for its length.
    pub fn run_http(
        &mut self,
        callback: HttpCallback,
        context: i32,
        data: &mut HttpData,
    ) -> Result<Action, PluginError> {
        let count = match callback {
            HttpCallback::RequestHeaders => data.request_headers.len(),
            HttpCallback::RequestBody => data.request_body.len(),
            HttpCallback::ResponseHeaders => data.response_headers.len(),
            HttpCallback::ResponseBody => data.response_body.len(),
        };
        // Bodies are handed over whole: only a head followed by one is not the stream's end.
        let end_of_stream = match callback {
            HttpCallback::RequestHeaders => !data.request_has_body,
            HttpCallback::ResponseHeaders => !data.response_has_body,
            HttpCallback::RequestBody | HttpCallback::ResponseBody => true,
        };
        let returned = self.with_data(data, |vm| {
            vm.call(
                |e| e.http_callback(callback),
                (context, len_i32(count), i32::from(end_of_stream)),
            )
        })?;
        Ok(match returned {
            None | Some(0) => Action::Continue,
            Some(_) => Action::Pause,
        })
    }

    /// The end of a request: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish(&mut self, context: i32, data: &mut HttpData) -> Result<(), PluginError> {
        self.with_data(data, |vm| {
            // Envoy's order, which the SDKs expect: done, then log, then delete.
            vm.call(|e| e.on_done.as_ref(), context)?;
            vm.call(|e| e.on_log.as_ref(), context)?;
            vm.call(|e| e.on_delete.as_ref(), context)?;
            Ok(())
        })
    }

    /// `proxy_on_tick` when the plugin asked for ticks and a period has passed since the
    /// last. Ticks ride on the requests a worker serves (no timer per worker): an idle
    /// worker's plugin is not woken, which costs a plugin nothing it could act on.
    fn tick_if_due(&mut self) -> Result<(), PluginError> {
        let period = self.store.data().tick_period_ms;
        if period == 0 || self.exports.on_tick.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        if now.duration_since(self.last_tick) < Duration::from_millis(u64::from(period)) {
            return Ok(());
        }
        self.last_tick = now;
        self.call(|e| e.on_tick.as_ref(), ROOT_CONTEXT_ID).map(drop)
    }

    fn with_data<R>(
        &mut self,
        data: &mut HttpData,
        run: impl FnOnce(&mut Vm) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        self.store.data_mut().http = Some(std::mem::take(data));
        let result = run(self);
        if let Some(back) = self.store.data_mut().http.take() {
            *data = back;
        }
        result
    }
}

/// Run `func` in `store` with a deadline of `timeout` from now: published for the
/// watchdog, kept in the store for its deadline callback, and an epoch deadline one tick
/// ahead (the next move of the epoch makes the callback look at the clock).
fn call_in<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    timeout: Duration,
    func: &TypedFunc<P, R>,
    params: P,
) -> Result<R, PluginError> {
    let due = watchdog::deadline(watchdog::now(), timeout);
    store.data_mut().deadline = due;
    store.set_epoch_deadline(1);
    watchdog::watched(due, || func.call(&mut *store, params))
        .map_err(|error| classify(&error, "call"))
}

fn len_i32(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// A callback's error as the host sees it: out of memory, out of time, or another trap.
fn classify(error: &wasmtime::Error, during: &'static str) -> PluginError {
    if error.downcast_ref::<MemoryLimitExceeded>().is_some()
        || error.chain().any(|e| e.is::<MemoryLimitExceeded>())
    {
        return PluginError::Failed(FailureReason::OutOfMemory, "memory limit".into());
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return PluginError::Failed(FailureReason::Timeout, "timeout_ms exceeded".into());
    }
    PluginError::Failed(FailureReason::Trap, format!("{during}: {error:#}"))
}

/// A plugin's instance on this thread, keyed by the loaded plugin's id; the `Weak` says
/// whether that load is still in a snapshot (instances of dropped loads are pruned). A
/// token of its own, not the `PluginShared` the instance itself holds, which would keep it
/// alive forever.
struct ThreadVm {
    alive: Weak<()>,
    vm: Vm,
}

thread_local! {
    /// By load id: a short list searched in order, cheaper per callback than hashing the
    /// id (a thread holds one instance per configured plugin).
    static VMS: RefCell<Vec<(u64, ThreadVm)>> = const { RefCell::new(Vec::new()) };
}

/// Run `work` on this thread's instance of plugin `id`, starting one if there is none. An
/// instance whose work failed is dropped: the next call starts a fresh one.
pub fn with_vm<R>(
    id: u64,
    alive: &Arc<()>,
    compiled: &Compiled,
    shared: &Arc<PluginShared>,
    work: impl FnOnce(&mut Vm) -> Result<R, PluginError>,
) -> Result<R, PluginError> {
    VMS.with(|vms| {
        let mut vms = vms.borrow_mut();
        let at = match vms.iter().position(|(key, _)| *key == id) {
            Some(at) => at,
            None => {
                // A new instance is a good moment to drop those of plugins no longer
                // configured.
                vms.retain(|(_, entry)| entry.alive.strong_count() > 0);
                let vm = Vm::start(compiled, Arc::clone(shared))?;
                let alive = Arc::downgrade(alive);
                vms.push((id, ThreadVm { alive, vm }));
                vms.len() - 1
            }
        };
        let Some((_, entry)) = vms.get_mut(at) else {
            return Err(PluginError::Refused("the instance vanished"));
        };
        let result = entry.vm.tick_if_due().and_then(|()| work(&mut entry.vm));
        if result.is_err() {
            vms.remove(at);
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{OnError, PluginConfig};
    use crate::http::response::StatusCode;

    const MINIMAL: &str = r#"(module
      (memory (export "memory") 1)
      (func (export "malloc") (param i32) (result i32) (i32.const 1024))
      (func (export "proxy_on_context_create") (param i32 i32)))"#;

    fn shared(name: &str) -> Arc<PluginShared> {
        shared_with(name, Duration::from_secs(1))
    }

    fn shared_with(name: &str, timeout: Duration) -> Arc<PluginShared> {
        Arc::new(PluginShared {
            config: PluginConfig {
                name: Arc::from(name),
                path: "minimal.wasm".into(),
                root_id: Arc::from(name),
                configuration: Arc::from(&b""[..]),
                vm_configuration: Arc::from(&b""[..]),
                on_error: OnError::FailClosed,
                failure_status: StatusCode::INTERNAL_SERVER_ERROR,
                max_memory_bytes: 1 << 20,
                timeout,
            },
            shared_data: Default::default(),
            metrics: Default::default(),
        })
    }

    /// `body` as the request headers callback of a module that needs nothing else.
    fn start_with_request_headers(body: &str, timeout: Duration) -> Vm {
        let module = format!(
            r#"(module
              (memory (export "memory") 1)
              (func (export "malloc") (param i32) (result i32) (i32.const 1024))
              (func (export "proxy_on_context_create") (param i32 i32))
              (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
                (local $n i32)
                {body}
                (i32.const 0)))"#
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("callback.wasm");
        let wasm = wat::parse_str(&module).unwrap_or_else(|e| panic!("wat: {e}"));
        std::fs::write(&path, wasm).unwrap_or_else(|e| panic!("write: {e}"));
        let compiled = super::super::engine::compile(&path).unwrap_or_else(|e| panic!("{e}"));
        Vm::start(&compiled, shared_with("callback", timeout)).unwrap_or_else(|e| panic!("{e}"))
    }

    fn request_headers(vm: &mut Vm) -> Result<Action, PluginError> {
        let context = vm.create_context()?;
        vm.run_http(
            HttpCallback::RequestHeaders,
            context,
            &mut HttpData::default(),
        )
    }

    /// A runaway callback stops at its budget: not before, and not long after (the
    /// watchdog sleeps until the deadline it saw published, not a tick at a time). Run
    /// alone, in a fresh process, it is also the regression test of a watchdog that
    /// started with the engine, before any budget was noted, and slept for ever.
    #[test]
    fn a_runaway_callback_stops_at_its_budget() {
        let budget = Duration::from_millis(40);
        let (send, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut vm = start_with_request_headers("(loop $forever (br $forever))", budget);
            let started = Instant::now();
            let result = request_headers(&mut vm);
            // The receiver gave up if this comes too late; the assertion below says so.
            let _ = send.send((result, started.elapsed()));
        });
        let Ok((result, took)) = receive.recv_timeout(Duration::from_secs(10)) else {
            panic!("the runaway callback was never interrupted");
        };
        assert!(
            matches!(result, Err(PluginError::Failed(FailureReason::Timeout, _))),
            "{result:?}"
        );
        assert!(took >= budget, "interrupted early: {took:?}");
        // Generous for a shared machine; a watchdog that missed the published deadline
        // would wait for a whole poll period or never fire.
        assert!(
            took < budget + Duration::from_millis(400),
            "interrupted late: {took:?}"
        );
    }

    /// The epoch moves for any worker's overdue callback: a callback within its own budget
    /// goes on when it does.
    #[test]
    fn a_callback_within_its_budget_survives_epoch_moves() {
        let mut vm = start_with_request_headers(
            "(local.set $n (i32.const 400000000))
             (loop $count
               (local.set $n (i32.sub (local.get $n) (i32.const 1)))
               (br_if $count (local.get $n)))",
            Duration::from_secs(10),
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let moves = Arc::new(AtomicU64::new(0));
        let mover = {
            let (done, moves) = (Arc::clone(&done), Arc::clone(&moves));
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    engine().increment_epoch();
                    moves.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let before = moves.load(Ordering::Relaxed);
        let result = request_headers(&mut vm);
        let during = moves.load(Ordering::Relaxed) - before;
        done.store(true, Ordering::Relaxed);
        mover
            .join()
            .unwrap_or_else(|_| panic!("the epoch thread panicked"));
        assert!(matches!(result, Ok(Action::Continue)), "{result:?}");
        assert!(
            during >= 10,
            "the epoch moved {during} times during the callback"
        );
    }

    /// Regression: the instance holds its plugin's `PluginShared`, so keying the prune on
    /// that kept every reloaded-away instance alive on every worker.
    #[test]
    fn instances_of_dropped_loads_are_pruned() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("minimal.wasm");
        let wasm = wat::parse_str(MINIMAL).unwrap_or_else(|e| panic!("wat: {e}"));
        std::fs::write(&path, wasm).unwrap_or_else(|e| panic!("write: {e}"));
        let compiled = super::super::engine::compile(&path).unwrap_or_else(|e| panic!("{e}"));
        let plugin = shared("minimal");
        let first = Arc::new(());
        with_vm(u64::MAX - 1, &first, &compiled, &plugin, |_| Ok(()))
            .unwrap_or_else(|e| panic!("{e}"));
        drop(first);
        let second = Arc::new(());
        with_vm(u64::MAX - 2, &second, &compiled, &plugin, |_| Ok(()))
            .unwrap_or_else(|e| panic!("{e}"));
        VMS.with(|vms| {
            let vms = vms.borrow();
            let has = |id: u64| vms.iter().any(|(key, _)| *key == id);
            assert!(!has(u64::MAX - 1), "the dropped load's instance stayed");
            assert!(has(u64::MAX - 2));
        });
    }
}
