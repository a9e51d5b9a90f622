//! What a plugin's host calls read and write: the store's state (limits, the plugin's
//! settings, the request's data while an HTTP callback runs) and the proxy-wasm wire
//! formats (header maps, property paths). Pure data; the calls themselves are in `abi.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime::{Memory, ResourceLimiter, TypedFunc};

use super::metrics::PluginMetrics;
use crate::config::PluginConfig;

/// proxy-wasm `WasmResult` codes the host calls return (spec: abi-versions/v0.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    InvalidMemoryAccess = 6,
    CasMismatch = 8,
    Unimplemented = 12,
}

/// Which header map a call names (`MapType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapKind {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
}

impl MapKind {
    pub fn from_abi(value: i32) -> Option<MapKind> {
        match value {
            0 => Some(MapKind::RequestHeaders),
            1 => Some(MapKind::RequestTrailers),
            2 => Some(MapKind::ResponseHeaders),
            3 => Some(MapKind::ResponseTrailers),
            _ => None,
        }
    }
}

/// Which buffer a call names (`BufferType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferKind {
    RequestBody,
    ResponseBody,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferKind {
    pub fn from_abi(value: i32) -> Option<BufferKind> {
        match value {
            0 => Some(BufferKind::RequestBody),
            1 => Some(BufferKind::ResponseBody),
            6 => Some(BufferKind::VmConfiguration),
            7 => Some(BufferKind::PluginConfiguration),
            _ => None,
        }
    }
}

/// A header map, pseudo-headers first. Names and values are shares of the received head
/// (`Bytes`: no copy per field, as the profile of bench/plugins.sh asked) until a plugin
/// edits them, so names keep the case they arrived in: they compare case-insensitively,
/// and a plugin sees them lower-cased, as Envoy hands them over (`serialize_map`).
pub type HeaderMap = Vec<(Bytes, Bytes)>;

/// The value of the first field named `name` (case-insensitive).
pub fn find_field<'a>(map: &'a HeaderMap, name: &[u8]) -> Option<&'a Bytes> {
    map.iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// The answer a plugin asked for with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

/// What the properties of a request are, as `proxy_get_property` reads them.
#[derive(Debug, Clone, Default)]
pub struct RequestProperties {
    pub scheme: &'static str,
    pub id: Bytes,
    /// Formatted only when a plugin asks (formatting an address costs more than the rest
    /// of the request's setup).
    pub source: Option<std::net::SocketAddr>,
    pub destination: Option<std::net::SocketAddr>,
    pub upstream: Option<String>,
    pub response_code: Option<u16>,
}

/// One request's data, moved into the store for the length of an HTTP callback.
#[derive(Debug, Default)]
pub struct HttpData {
    pub request_headers: HeaderMap,
    pub response_headers: HeaderMap,
    pub request_body: Vec<u8>,
    pub response_body: Vec<u8>,
    /// Whether a body follows the request head, the response head: the headers
    /// callbacks' `end_of_stream` is its negation.
    pub request_has_body: bool,
    pub response_has_body: bool,
    /// Whether a host call changed the request head (it is then rebuilt once).
    pub request_edited: bool,
    pub response_edited: bool,
    pub local_response: Option<LocalResponse>,
    pub properties: RequestProperties,
}

impl HttpData {
    pub fn map(&self, kind: MapKind) -> Option<&HeaderMap> {
        match kind {
            MapKind::RequestHeaders => Some(&self.request_headers),
            MapKind::ResponseHeaders => Some(&self.response_headers),
            MapKind::RequestTrailers | MapKind::ResponseTrailers => None,
        }
    }

    /// The map to change, marking its head as edited.
    pub fn map_mut(&mut self, kind: MapKind) -> Option<&mut HeaderMap> {
        match kind {
            MapKind::RequestHeaders => {
                self.request_edited = true;
                Some(&mut self.request_headers)
            }
            MapKind::ResponseHeaders => {
                self.response_edited = true;
                Some(&mut self.response_headers)
            }
            MapKind::RequestTrailers | MapKind::ResponseTrailers => None,
        }
    }
}

/// Shared data of a plugin (`proxy_get_shared_data`/`proxy_set_shared_data`): one map for
/// all the plugin's VMs (one per worker), each value with its compare-and-swap number.
#[derive(Debug, Default)]
pub struct SharedData {
    entries: Mutex<SharedEntries>,
}

#[derive(Debug, Default)]
struct SharedEntries {
    map: HashMap<String, (Vec<u8>, u32)>,
    /// Keys and values held, against `MAX_PLUGIN_SHARED_DATA_BYTES`.
    bytes: usize,
}

impl SharedData {
    pub fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.map.get(key).cloned()
    }

    /// Set `key`; `cas` 0 sets unconditionally, another value only if it is the current one.
    /// Past `MAX_PLUGIN_SHARED_DATA_BYTES` in all, a set that grows the data is refused
    /// (`BadArgument`): the map lives in the host's memory, outside the plugin's limit.
    pub fn set(&self, key: &str, value: Vec<u8>, cas: u32) -> Status {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let SharedEntries { map, bytes } = &mut *entries;
        let old_len = map.get(key).map_or(0, |(old, _)| key.len() + old.len());
        let total = (*bytes - old_len).saturating_add(key.len() + value.len());
        if total > crate::limits::MAX_PLUGIN_SHARED_DATA_BYTES && total > *bytes {
            return Status::BadArgument;
        }
        match map.get_mut(key) {
            Some((_, current)) if cas != 0 && cas != *current => return Status::CasMismatch,
            Some(entry) => {
                // 0 means "no CAS", so the counter skips it when it wraps.
                let next = entry.1.wrapping_add(1).max(1);
                *entry = (value, next);
            }
            None => {
                map.insert(key.to_string(), (value, 1));
            }
        }
        *bytes = total;
        Status::Ok
    }
}

/// What every VM of one plugin shares: its settings, shared data and metrics.
#[derive(Debug)]
pub struct PluginShared {
    pub config: PluginConfig,
    pub shared_data: Arc<SharedData>,
    pub metrics: Arc<PluginMetrics>,
}

/// The data of a VM's store.
pub struct HostState {
    pub memory_limit: MemoryLimit,
    pub plugin: Arc<PluginShared>,
    /// The request whose callback runs now, if any.
    pub http: Option<HttpData>,
    /// What `proxy_set_tick_period_milliseconds` asked for (0: no ticks).
    pub tick_period_ms: u32,
    /// The module's memory and allocator, looked up once when the instance starts rather
    /// than by name on every host call.
    pub memory: Option<Memory>,
    pub allocate: Option<TypedFunc<i32, i32>>,
    /// When the callback running now must have returned (`watchdog::now`'s clock): what
    /// the store's epoch deadline callback compares the clock with.
    pub deadline: u64,
}

/// The memory limit of a store: a growth past it is refused with an error the callback
/// traps on, so an out-of-memory is told apart from any other trap.
pub struct MemoryLimit {
    pub max_bytes: u64,
}

#[derive(Debug)]
pub struct MemoryLimitExceeded;

impl std::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the plugin's memory would grow past max_memory_bytes")
    }
}

impl std::error::Error for MemoryLimitExceeded {}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_bytes {
            return Err(MemoryLimitExceeded.into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far beyond any real plugin.
        Ok(desired <= 1_000_000)
    }
}

/// The length of `map` serialised (`serialize_map_into`).
pub fn serialized_map_len(map: &HeaderMap) -> usize {
    4 + map
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>()
}

/// Serialise a header map as proxy-wasm lays it out: the pair count, then each key and
/// value length (u32, little-endian), then each key (lower-cased) and value followed by a
/// NUL. `out` is exactly `serialized_map_len(map)` long: the guest's memory, written in
/// place rather than through a copy of its own.
pub fn serialize_map_into(map: &HeaderMap, out: &mut [u8]) -> Option<()> {
    let mut sizes = out.get_mut(..4 + 8 * map.len())?;
    put_u32(&mut sizes, map.len())?;
    for (key, value) in map {
        put_u32(&mut sizes, key.len())?;
        put_u32(&mut sizes, value.len())?;
    }
    let mut data = out.get_mut(4 + 8 * map.len()..)?;
    for (key, value) in map {
        let at = std::mem::take(&mut data);
        let (key_out, rest) = at.split_at_mut_checked(key.len())?;
        key_out.copy_from_slice(key);
        key_out.make_ascii_lowercase();
        let (nul, rest) = rest.split_first_mut()?;
        *nul = 0;
        let (value_out, rest) = rest.split_at_mut_checked(value.len())?;
        value_out.copy_from_slice(value);
        let (nul, rest) = rest.split_first_mut()?;
        *nul = 0;
        data = rest;
    }
    data.is_empty().then_some(())
}

/// `value` as a little-endian u32 at the start of `out`, which moves past it.
fn put_u32(out: &mut &mut [u8], value: usize) -> Option<()> {
    let (head, rest) = std::mem::take(out).split_at_mut_checked(4)?;
    head.copy_from_slice(&u32::try_from(value).unwrap_or(u32::MAX).to_le_bytes());
    *out = rest;
    Some(())
}

/// The pairs of a serialised header map, or `None` when the bytes do not describe one.
pub fn deserialize_map(bytes: &[u8]) -> Option<HeaderMap> {
    let read_u32 = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(raw)).ok()
    };
    let count = read_u32(0)?;
    let mut data = count.checked_mul(8)?.checked_add(4)?;
    if data > bytes.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    for index in 0..count {
        let key_len = read_u32(4 + index * 8)?;
        let value_len = read_u32(8 + index * 8)?;
        // Each key and value is followed by a NUL: its absence means a truncated map.
        let key_end = data.checked_add(key_len)?;
        let key = bytes.get(data..key_end)?;
        if *bytes.get(key_end)? != 0 {
            return None;
        }
        data = key_end.checked_add(1)?;
        let value_end = data.checked_add(value_len)?;
        let value = bytes.get(data..value_end)?;
        if *bytes.get(value_end)? != 0 {
            return None;
        }
        data = value_end.checked_add(1)?;
        pairs.push((Bytes::copy_from_slice(key), Bytes::copy_from_slice(value)));
    }
    Some(pairs)
}

/// A property's value (`proxy_get_property`); the path's segments are joined by NUL.
pub fn property(path: &[u8], plugin: &PluginConfig, http: Option<&HttpData>) -> Option<Bytes> {
    let segments: Vec<&[u8]> = path.split(|b| *b == 0).filter(|s| !s.is_empty()).collect();
    let text = |s: &str| Some(Bytes::copy_from_slice(s.as_bytes()));
    match segments.as_slice() {
        [b"plugin_name"] => return text(&plugin.name),
        [b"plugin_root_id"] => return text(&plugin.root_id),
        _ => {}
    }
    let http = http?;
    let properties = &http.properties;
    // The request line's parts as they are now (a plugin may have changed them).
    let pseudo = |name: &str| find_field(&http.request_headers, name.as_bytes()).cloned();
    match segments.as_slice() {
        [b"request", b"path"] => pseudo(":path"),
        [b"request", b"url_path"] => pseudo(":path").map(|path| {
            let end = path.iter().position(|b| *b == b'?').unwrap_or(path.len());
            path.slice(..end)
        }),
        [b"request", b"method"] => pseudo(":method"),
        [b"request", b"host"] => pseudo(":authority"),
        [b"request", b"scheme"] => Some(Bytes::from_static(properties.scheme.as_bytes())),
        [b"request", b"id"] => Some(properties.id.clone()),
        [b"request", b"protocol"] => Some(Bytes::from_static(b"HTTP/1.1")),
        [b"request", b"headers", name] => find_field(&http.request_headers, name).cloned(),
        [b"source", b"address"] => properties.source.and_then(|a| text(&a.to_string())),
        [b"destination", b"address"] => properties.destination.and_then(|a| text(&a.to_string())),
        [b"upstream", b"address"] => properties.upstream.as_deref().and_then(text),
        // Envoy hands integers over as 8 little-endian bytes.
        [b"response", b"code"] => properties
            .response_code
            .map(|code| Bytes::copy_from_slice(&u64::from(code).to_le_bytes())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serialize_map(map: &HeaderMap) -> Vec<u8> {
        let mut out = vec![0; serialized_map_len(map)];
        assert_eq!(serialize_map_into(map, &mut out), Some(()));
        out
    }

    #[test]
    fn header_maps_round_trip() {
        let pairs: HeaderMap = vec![
            (Bytes::from_static(b":path"), Bytes::from_static(b"/a")),
            (Bytes::from_static(b"x-empty"), Bytes::new()),
        ];
        let bytes = serialize_map(&pairs);
        assert_eq!(&bytes[..4], &2u32.to_le_bytes());
        assert_eq!(deserialize_map(&bytes), Some(pairs));
    }

    /// Names are kept as received and handed to the guest lower-cased, as Envoy does.
    #[test]
    fn serialised_names_are_lower_case() {
        let pairs: HeaderMap = vec![(Bytes::from_static(b"X-Mixed"), Bytes::from_static(b"V"))];
        let lowered: HeaderMap = vec![(Bytes::from_static(b"x-mixed"), Bytes::from_static(b"V"))];
        assert_eq!(deserialize_map(&serialize_map(&pairs)), Some(lowered));
    }

    #[test]
    fn a_map_is_not_written_into_the_wrong_length() {
        let pairs: HeaderMap = vec![(Bytes::from_static(b"k"), Bytes::from_static(b"v"))];
        let len = serialized_map_len(&pairs);
        for wrong in [0, len - 1, len + 1] {
            let mut out = vec![0; wrong];
            assert_eq!(serialize_map_into(&pairs, &mut out), None, "{wrong}");
        }
    }

    #[test]
    fn truncated_header_maps_are_refused_without_panicking() {
        let bytes = serialize_map(&vec![(
            Bytes::from_static(b"key"),
            Bytes::from_static(b"value"),
        )]);
        for len in 0..bytes.len() {
            assert_eq!(deserialize_map(&bytes[..len]), None, "{len}");
        }
        assert_eq!(deserialize_map(&[255, 255, 255, 255]), None);
    }

    #[test]
    fn shared_data_compares_and_swaps() {
        let data = SharedData::default();
        assert_eq!(data.set("k", b"1".to_vec(), 0), Status::Ok);
        let (_, cas) = data.get("k").unwrap_or_default();
        assert_eq!(
            data.set("k", b"2".to_vec(), cas.wrapping_add(7)),
            Status::CasMismatch
        );
        assert_eq!(data.set("k", b"2".to_vec(), cas), Status::Ok);
        assert_eq!(data.get("k").map(|(v, _)| v), Some(b"2".to_vec()));
    }

    #[test]
    fn shared_data_is_bounded() {
        let data = SharedData::default();
        let big = vec![0u8; crate::limits::MAX_PLUGIN_SHARED_DATA_BYTES / 2];
        assert_eq!(data.set("a", big.clone(), 0), Status::Ok);
        assert_eq!(data.set("b", big.clone(), 0), Status::BadArgument);
        // Replacing a value with a smaller one is always allowed.
        assert_eq!(data.set("a", b"small".to_vec(), 0), Status::Ok);
        assert_eq!(data.set("b", big, 0), Status::Ok);
    }
}
