//! One request through its route's chain of plugins: the request's data (header maps,
//! body, properties) handed to each plugin's callbacks in order, what they decided, and
//! their failures answered by each plugin's `on_error`.

use std::sync::Arc;

use bytes::Bytes;

use super::error::PluginError;
use super::host::{find_field, HeaderMap, HttpData, RequestProperties};
use super::set::{LoadedPlugin, PluginSet};
use super::vm::{with_vm, Action, HttpCallback};
use crate::config::OnError;
use crate::http::response::StatusCode;

pub use super::host::LocalResponse;

/// What the connection knows of a request when its head arrives: shares of the received
/// head's bytes, not copies.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub method: Bytes,
    /// The request target as received (path and query).
    pub path: Bytes,
    pub host: Bytes,
    pub scheme: &'static str,
    pub id: Bytes,
    pub source: std::net::SocketAddr,
    pub destination: std::net::SocketAddr,
    /// The header fields as received (names in their case; see `HeaderMap`).
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
    /// All fields; `regular_fields` leaves the pseudo-headers out.
    map: &'a HeaderMap,
}

/// A response head as the plugins left it.
pub struct ResponseEdits<'a> {
    /// `:status`, when it still reads as a number.
    pub status: Option<u16>,
    map: &'a HeaderMap,
}

impl<'a> RequestEdits<'a> {
    /// The fields, pseudo-headers left out; names as received or as a plugin gave them
    /// (lower-case), to be compared case-insensitively.
    pub fn fields(&self) -> impl Iterator<Item = &'a (Bytes, Bytes)> + Clone {
        regular_fields(self.map)
    }
}

impl<'a> ResponseEdits<'a> {
    /// As `RequestEdits::fields`.
    pub fn fields(&self) -> impl Iterator<Item = &'a (Bytes, Bytes)> + Clone {
        regular_fields(self.map)
    }
}

fn regular_fields(map: &HeaderMap) -> impl Iterator<Item = &(Bytes, Bytes)> + Clone {
    map.iter().filter(|(name, _)| !name.starts_with(b":"))
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

/// The slots of a request's chain: inline for the usual short chain, so starting a request
/// allocates nothing for them (the malloc profile of bench/plugins.sh counted one per
/// request); a longer chain's on the heap.
#[derive(Debug)]
enum Slots {
    Inline([Slot; INLINE_SLOTS], usize),
    Heap(Vec<Slot>),
}

const INLINE_SLOTS: usize = 4;

impl Slots {
    fn new(count: usize) -> Slots {
        if count <= INLINE_SLOTS {
            Slots::Inline(Default::default(), count)
        } else {
            Slots::Heap((0..count).map(|_| Slot::default()).collect())
        }
    }

    fn iter(&self) -> std::slice::Iter<'_, Slot> {
        match self {
            Slots::Inline(slots, count) => slots.get(..*count).unwrap_or_default().iter(),
            Slots::Heap(slots) => slots.iter(),
        }
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Slot> {
        match self {
            Slots::Inline(slots, count) => slots.get_mut(..*count).unwrap_or_default().iter_mut(),
            Slots::Heap(slots) => slots.iter_mut(),
        }
    }
}

pub struct PluginRequest {
    set: Arc<PluginSet>,
    /// The route the request took: its chain is looked up in `set` (no copy per request).
    route: Option<usize>,
    slots: Slots,
    data: HttpData,
}

impl std::fmt::Debug for PluginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRequest")
            .field("chain", &self.set.config.chain(self.route))
            .finish_non_exhaustive()
    }
}

/// The room a header map of `fields` fields is made with: the pseudo-headers the chain
/// puts in front (four in a request's, one in a response's) and a few fields a plugin adds,
/// so that neither grows the vector (the profile of bench/plugins.sh showed its `realloc`).
pub fn map_capacity(fields: usize) -> usize {
    fields + 4 + 4
}

/// The pseudo-headers Envoy puts first in a request map, and a plugin may change.
const METHOD: &[u8] = b":method";
const PATH: &[u8] = b":path";
const STATUS: &[u8] = b":status";

impl PluginRequest {
    /// The plugins a request that route `route` took runs, as a request of its own; `None`
    /// when the chain is empty.
    pub fn start(set: &Arc<PluginSet>, route: Option<usize>, info: RequestInfo) -> Option<Self> {
        let chain = set.config.chain(route);
        if chain.is_empty() {
            return None;
        }
        let slots = Slots::new(chain.len());
        Some(PluginRequest::new(Arc::clone(set), route, slots, info))
    }

    fn new(set: Arc<PluginSet>, route: Option<usize>, slots: Slots, info: RequestInfo) -> Self {
        // In front of the fields, in the vector that holds them (no second one).
        let mut request_headers = info.headers;
        let pseudo = [
            (Bytes::from_static(METHOD), info.method),
            (Bytes::from_static(PATH), info.path),
            (Bytes::from_static(b":authority"), info.host),
            (
                Bytes::from_static(b":scheme"),
                Bytes::from_static(info.scheme.as_bytes()),
            ),
        ];
        request_headers.splice(0..0, pseudo);
        PluginRequest {
            set,
            route,
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
        // In front of the fields, in the vector that holds them (`map_capacity`).
        let mut map = headers;
        map.insert(0, (Bytes::from_static(STATUS), status_text(status)));
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
        let pseudo = |name: &[u8]| {
            find_field(&self.data.request_headers, name).map_or(&[][..], |value| &value[..])
        };
        Some(RequestEdits {
            method: pseudo(METHOD),
            target: pseudo(PATH),
            map: &self.data.request_headers,
        })
    }

    /// The response's status and fields when a plugin changed them.
    pub fn response_edits(&self) -> Option<ResponseEdits<'_>> {
        if !self.data.response_edited {
            return None;
        }
        let status = find_field(&self.data.response_headers, STATUS)
            .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok());
        Some(ResponseEdits {
            status,
            map: &self.data.response_headers,
        })
    }

    /// The end of the request: `proxy_on_log`, `proxy_on_done`, `proxy_on_delete` on each
    /// plugin that has a context for it. Failures are logged and counted; nobody is left to
    /// answer differently.
    pub fn finish(&mut self, status: u16) {
        self.data.properties.response_code = Some(status);
        for (slot, &index) in self.slots.iter_mut().zip(self.set.config.chain(self.route)) {
            // Once per request, whichever path ends it.
            let context = slot.context.take();
            let (Some((generation, context)), false) = (context, slot.skipped) else {
                continue;
            };
            let Some(plugin) = self.set.plugins.get(index) else {
                continue;
            };
            if !plugin.compiled.ends_requests {
                continue;
            }
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
        for (slot, &index) in self.slots.iter_mut().zip(self.set.config.chain(self.route)) {
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

/// `:status`'s value: three digits out of a static table rather than a string per response.
fn status_text(status: u16) -> Bytes {
    static DIGITS: [u8; 3000] = {
        let mut table = [0u8; 3000];
        let mut code = 0;
        while code < 1000 {
            table[code * 3] = b'0' + (code / 100) as u8;
            table[code * 3 + 1] = b'0' + (code / 10 % 10) as u8;
            table[code * 3 + 2] = b'0' + (code % 10) as u8;
            code += 1;
        }
        table
    };
    let at = usize::from(status) * 3;
    match DIGITS.get(at..at + 3) {
        Some(digits) => Bytes::from_static(digits),
        None => Bytes::from(status.to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_as_many_as_the_chain_inline_or_not() {
        for count in [0, 1, INLINE_SLOTS, INLINE_SLOTS + 1, 9] {
            let mut slots = Slots::new(count);
            assert_eq!(slots.iter().count(), count);
            for slot in slots.iter_mut() {
                slot.skipped = true;
            }
            assert!(slots.iter().all(|slot| slot.skipped));
            assert_eq!(matches!(slots, Slots::Inline(..)), count <= INLINE_SLOTS);
        }
    }

    #[test]
    fn status_text_is_the_code_in_three_digits() {
        for (code, text) in [
            (100, "100"),
            (200, "200"),
            (404, "404"),
            (999, "999"),
            (42, "042"),
        ] {
            assert_eq!(status_text(code), text.as_bytes(), "{code}");
        }
        assert_eq!(status_text(1000), "1000".as_bytes());
    }
}
