//! One request through its route's chain of plugins: the request's data (header maps,
//! body, properties) handed to each plugin's callbacks in order, what they decided, and
//! their failures answered by each plugin's `on_error`.

use std::sync::Arc;

use super::error::PluginError;
use super::host::{HeaderMap, HttpData, RequestProperties};
use super::set::{LoadedPlugin, PluginSet};
use super::vm::{with_vm, Action, HttpCallback};
use crate::config::OnError;
use crate::http::response::StatusCode;

pub use super::host::LocalResponse;

/// What the connection knows of a request when its head arrives.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: String,
    /// The request target as received (path and query).
    pub path: String,
    pub host: String,
    pub scheme: &'static str,
    pub id: Vec<u8>,
    pub source: std::net::SocketAddr,
    pub destination: std::net::SocketAddr,
    /// The header fields as received, names lower-cased.
    pub headers: HeaderMap,
}

/// What the chain decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on with the request (its head may have been edited).
    Continue,
    /// Answer this instead (`proxy_send_local_response`).
    Respond(LocalResponse),
    /// A `fail_closed` plugin failed: answer `status`.
    Fail {
        plugin: Arc<str>,
        status: StatusCode,
    },
}

/// A request head as the plugins left it.
pub struct RequestEdits<'a> {
    pub method: &'a [u8],
    pub target: &'a [u8],
    /// The fields, pseudo-headers left out.
    pub fields: Vec<(&'a str, &'a [u8])>,
}

/// A response head as the plugins left it.
pub struct ResponseEdits<'a> {
    /// `:status`, when it still reads as a number.
    pub status: Option<u16>,
    pub fields: Vec<(&'a str, &'a [u8])>,
}

fn regular_fields(map: &HeaderMap) -> Vec<(&str, &[u8])> {
    map.iter()
        .filter(|(name, _)| !name.starts_with(':'))
        .map(|(name, value)| (name.as_str(), &value[..]))
        .collect()
}

/// One plugin's part in the request.
#[derive(Debug, Default)]
struct Slot {
    /// The instance generation and the context id made on it.
    context: Option<(u64, i32)>,
    /// A `fail_open` plugin that failed: left out for the rest of the request.
    skipped: bool,
    /// It paused on the request headers and exports a body callback.
    wants_body: bool,
    /// It paused on the response headers and exports a response body callback.
    wants_response_body: bool,
}

pub struct PluginRequest {
    set: Arc<PluginSet>,
    chain: Vec<usize>,
    slots: Vec<Slot>,
    data: HttpData,
}

impl std::fmt::Debug for PluginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRequest")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

/// The pseudo-headers Envoy puts first in a request map, and a plugin may change.
const METHOD: &str = ":method";
const PATH: &str = ":path";

impl PluginRequest {
    /// The plugins a request that route `route` took runs, as a request of its own; `None`
    /// when the chain is empty.
    pub fn start(set: &Arc<PluginSet>, route: Option<usize>, info: RequestInfo) -> Option<Self> {
        let chain = set.config.chain(route);
        if chain.is_empty() {
            return None;
        }
        Some(PluginRequest::new(Arc::clone(set), chain.to_vec(), info))
    }

    fn new(set: Arc<PluginSet>, chain: Vec<usize>, info: RequestInfo) -> PluginRequest {
        let mut request_headers = Vec::with_capacity(info.headers.len() + 4);
        request_headers.push((METHOD.to_string(), info.method.into_bytes()));
        request_headers.push((PATH.to_string(), info.path.into_bytes()));
        request_headers.push((":authority".to_string(), info.host.into_bytes()));
        request_headers.push((":scheme".to_string(), info.scheme.as_bytes().to_vec()));
        request_headers.extend(info.headers);
        let slots = chain.iter().map(|_| Slot::default()).collect();
        PluginRequest {
            set,
            chain,
            slots,
            data: HttpData {
                request_headers,
                properties: RequestProperties {
                    scheme: info.scheme,
                    id: info.id,
                    source: Some(info.source),
                    destination: Some(info.destination),
                    upstream: None,
                    response_code: None,
                },
                ..HttpData::default()
            },
        }
    }

    /// `proxy_on_request_headers` of every plugin in order; `has_body`: a body follows.
    pub fn on_request_headers(&mut self, has_body: bool) -> Verdict {
        self.data.request_has_body = has_body;
        self.run(HttpCallback::RequestHeaders, |_| true)
    }

    /// Whether a plugin asked for the request body (paused on the headers).
    pub fn wants_request_body(&self) -> bool {
        self.slots.iter().any(|s| s.wants_body && !s.skipped)
    }

    /// `proxy_on_request_body` with the whole body, for the plugins that asked for it. The
    /// body they leave is `request_body()`.
    pub fn on_request_body(&mut self, body: Vec<u8>) -> Verdict {
        self.data.request_body = body;
        self.run(HttpCallback::RequestBody, |slot| slot.wants_body)
    }

    pub fn take_request_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data.request_body)
    }

    /// `proxy_on_response_headers` of every plugin in order, on the response head about to
    /// be sent; `response_edits` then says what changed.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        headers: HeaderMap,
        upstream: Option<&str>,
    ) -> Verdict {
        let mut map = Vec::with_capacity(headers.len() + 1);
        map.push((":status".to_string(), status.to_string().into_bytes()));
        map.extend(headers);
        self.data.response_headers = map;
        self.data.response_edited = false;
        // 1xx, 204 and 304 carry no body (RFC 9110 §6.4.1); others may.
        self.data.response_has_body = !(status < 200 || status == 204 || status == 304);
        self.data.properties.response_code = Some(status);
        self.data.properties.upstream = upstream.map(str::to_string);
        self.run(HttpCallback::ResponseHeaders, |_| true)
    }

    /// Whether a plugin asked for the response body (paused on the response headers).
    pub fn wants_response_body(&self) -> bool {
        self.slots
            .iter()
            .any(|s| s.wants_response_body && !s.skipped)
    }

    /// `proxy_on_response_body` with the whole body, for the plugins that asked for it. The
    /// body they leave is `take_response_body()`.
    pub fn on_response_body(&mut self, body: Vec<u8>) -> Verdict {
        self.data.response_body = body;
        self.run(HttpCallback::ResponseBody, |slot| slot.wants_response_body)
    }

    pub fn take_response_body(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data.response_body)
    }

    /// The request head's new start line and fields when a plugin changed them.
    pub fn request_edits(&self) -> Option<RequestEdits<'_>> {
        if !self.data.request_edited {
            return None;
        }
        let pseudo = |name: &str| {
            self.data
                .request_headers
                .iter()
                .find(|(key, _)| key == name)
                .map_or(&[][..], |(_, value)| &value[..])
        };
        Some(RequestEdits {
            method: pseudo(METHOD),
            target: pseudo(PATH),
            fields: regular_fields(&self.data.request_headers),
        })
    }

    /// The response's status and fields when a plugin changed them.
    pub fn response_edits(&self) -> Option<ResponseEdits<'_>> {
        if !self.data.response_edited {
            return None;
        }
        let status = self
            .data
            .response_headers
            .iter()
            .find(|(name, _)| name == ":status")
            .and_then(|(_, value)| std::str::from_utf8(value).ok()?.parse().ok());
        Some(ResponseEdits {
            status,
            fields: regular_fields(&self.data.response_headers),
        })
    }

    /// The end of the request: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` on each
    /// plugin that has a context for it. Failures are logged and counted; nobody is left to
    /// answer differently.
    pub fn finish(&mut self, status: u16) {
        self.data.properties.response_code = Some(status);
        for (slot, &index) in self.slots.iter_mut().zip(&self.chain) {
            // Once per request, whichever path ends it.
            let context = slot.context.take();
            let (Some((generation, context)), false) = (context, slot.skipped) else {
                continue;
            };
            let Some(plugin) = self.set.plugins.get(index) else {
                continue;
            };
            let data = &mut self.data;
            let result = with_vm(
                plugin.id,
                &plugin.alive,
                &plugin.compiled,
                &plugin.shared,
                |vm| {
                    // An instance started since (after a failure) never saw this request.
                    if vm.generation != generation {
                        return Ok(());
                    }
                    vm.finish(context, data)
                },
            );
            if let Err(error) = result {
                failed(plugin, &error);
            }
        }
    }

    fn run(&mut self, callback: HttpCallback, wanted: impl Fn(&Slot) -> bool) -> Verdict {
        for (slot, &index) in self.slots.iter_mut().zip(&self.chain) {
            if slot.skipped || !wanted(slot) {
                continue;
            }
            let Some(plugin) = self.set.plugins.get(index) else {
                continue;
            };
            let data = &mut self.data;
            let result = with_vm(
                plugin.id,
                &plugin.alive,
                &plugin.compiled,
                &plugin.shared,
                |vm| {
                    if !vm.has(callback) && callback != HttpCallback::RequestHeaders {
                        return Ok((Action::Continue, false));
                    }
                    // A context per request per instance, made on first use (again on an
                    // instance that replaced a failed one, or on another worker's instance
                    // when a shared runtime moved the request between threads).
                    let context = match slot.context {
                        Some((generation, id)) if generation == vm.generation => id,
                        _ => {
                            let id = vm.create_context()?;
                            slot.context = Some((vm.generation, id));
                            id
                        }
                    };
                    let action = vm.run_http(callback, context, data)?;
                    let body_callback = match callback {
                        HttpCallback::RequestHeaders => HttpCallback::RequestBody,
                        _ => HttpCallback::ResponseBody,
                    };
                    Ok((action, vm.has(body_callback)))
                },
            );
            match result {
                Ok((action, has_body_callback)) => {
                    if let Some(response) = self.data.local_response.take() {
                        return Verdict::Respond(response);
                    }
                    let paused = action == Action::Pause && has_body_callback;
                    match callback {
                        HttpCallback::RequestHeaders => slot.wants_body = paused,
                        HttpCallback::ResponseHeaders => slot.wants_response_body = paused,
                        HttpCallback::RequestBody | HttpCallback::ResponseBody => {}
                    }
                }
                Err(error) => {
                    failed(plugin, &error);
                    slot.context = None;
                    match plugin.shared.config.on_error {
                        OnError::FailOpen => slot.skipped = true,
                        OnError::FailClosed => {
                            return Verdict::Fail {
                                plugin: Arc::clone(&plugin.shared.config.name),
                                status: plugin.shared.config.failure_status,
                            }
                        }
                    }
                }
            }
        }
        Verdict::Continue
    }
}

/// Log and count a failed callback.
fn failed(plugin: &LoadedPlugin, error: &PluginError) {
    let reason = error.reason();
    plugin.shared.metrics.record_failure(reason);
    tracing::warn!(
        plugin = %plugin.shared.config.name,
        reason = reason.label(),
        %error,
        on_error = ?plugin.shared.config.on_error,
        "plugin failed; its instance is replaced"
    );
}
