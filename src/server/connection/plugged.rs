//! The connection's side of the plugins: what a plugin is told about a request, and what
//! its decisions become (a rebuilt request head, an edited or local response, a refusal).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};

use crate::fault::Fault;
use crate::http::parser::{parse_request, ParseLimits, Status};
use crate::http::refield::{self, NameCase};
use crate::http::request::{HeaderSpan, RequestHead, Span};
use crate::http::response::{HeaderValue, Response, ResponseBody, StatusCode};
use crate::http::scheme::Scheme;
use crate::plugins::{map_capacity, LocalResponse, PluginRequest, RequestInfo, Verdict};
use crate::proxy::exchange::{BodyEdit, HeadEdit, ResponseHook};

/// Field names a plugin cannot set on a response: the writer owns the framing and the
/// connection's fate.
fn is_writer_owned(name: &[u8]) -> bool {
    [
        &b"content-length"[..],
        b"transfer-encoding",
        b"connection",
        b"keep-alive",
        b"date",
        b"server",
    ]
    .iter()
    .any(|owned| name.eq_ignore_ascii_case(owned))
}

/// What the plugins are told about a request whose head arrived.
pub(super) fn request_info(
    head: &RequestHead,
    peer: SocketAddr,
    scheme: Scheme,
    request_id: &[u8],
    destination: SocketAddr,
) -> RequestInfo {
    let (method, path, host) = head.shared_request_line();
    RequestInfo {
        method,
        path,
        host,
        scheme: scheme.as_str(),
        id: Bytes::copy_from_slice(request_id),
        source: peer,
        destination,
        headers: {
            let mut headers = Vec::with_capacity(map_capacity(head.header_count()));
            headers.extend(head.shared_fields());
            headers
        },
    }
}

/// The request head with the plugins' edits, parsed as a client's would be: a plugin
/// cannot send what a client could not. `body_length` replaces the framing when the body
/// was buffered (and perhaps changed) for the plugins. Edits of ordinary fields skip the
/// second parse when its outcome is known (`refield::request_with_fields`, the same bytes).
pub(super) fn rebuild_head(
    original: &RequestHead,
    request: &PluginRequest,
    body_length: Option<usize>,
    limits: &ParseLimits,
) -> Result<Option<RequestHead>, Fault> {
    rebuild(original, request, body_length, limits, true)
}

/// `rebuild_head`, with the shortcut or (`shortcut: false`, the tests' reference) without.
fn rebuild(
    original: &RequestHead,
    request: &PluginRequest,
    body_length: Option<usize>,
    limits: &ParseLimits,
    shortcut: bool,
) -> Result<Option<RequestHead>, Fault> {
    let refused = |reason| Fault::Plugin {
        plugin: Arc::from("chain"),
        status: StatusCode::INTERNAL_SERVER_ERROR,
        reason,
    };
    // Allocated once the shortcut below is known not to apply.
    let mut head = BytesMut::new();
    match request.request_edits() {
        None if body_length.is_none() => return Ok(None),
        Some(edits) => {
            let fields = edits.fields().map(|(name, value)| (&name[..], &value[..]));
            if shortcut && body_length.is_none() {
                let rebuilt = refield::request_with_fields(
                    original,
                    edits.method,
                    edits.target,
                    fields.clone(),
                    limits,
                );
                if let Some(rebuilt) = rebuilt {
                    return Ok(Some(rebuilt));
                }
            }
            head.reserve(original.head_bytes() + 256);
            refield::put_request_line(&mut head, edits.method, edits.target, original.version());
            for (name, value) in fields {
                put_field(
                    &mut head,
                    (name, value),
                    NameCase::Lower,
                    body_length.is_some(),
                );
            }
        }
        None => {
            head.reserve(original.head_bytes() + 256);
            refield::put_request_line(
                &mut head,
                original.method_str().as_bytes(),
                original.target().as_bytes(),
                original.version(),
            );
            for (name, value) in original.fields() {
                put_field(&mut head, (name, value), NameCase::AsGiven, true);
            }
        }
    }
    if let Some(length) = body_length {
        head.put_slice(b"content-length: ");
        head.put_slice(length.to_string().as_bytes());
        head.put_slice(b"\r\n");
    }
    head.put_slice(b"\r\n");
    let bytes = head.freeze();
    match parse_request(&bytes, limits) {
        Ok(Status::Complete(parsed, consumed)) if consumed == bytes.len() => {
            let rebuilt = RequestHead::new(bytes, parsed);
            // Without a rebuilt body, the framing must stay the client's: the bytes that
            // follow the head are delimited by it.
            if body_length.is_none() && rebuilt.framing() != original.framing() {
                return Err(refused("changed the request's framing fields"));
            }
            Ok(Some(rebuilt))
        }
        _ => Err(refused("left a request head that does not parse")),
    }
}

/// One field line (the name lower-cased); with a rebuilt body, the client's framing fields
/// and `Expect` are left out (the body is here already, with a length of its own).
fn put_field(
    head: &mut BytesMut,
    (name, value): (&[u8], &[u8]),
    case: NameCase,
    rebuilt_body: bool,
) {
    let framing = name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"expect");
    if rebuilt_body && framing {
        return;
    }
    refield::put_field_line(head, name, value, case);
}

/// The answer a plugin sent with `proxy_send_local_response`, and its fields.
pub(super) fn local_response(local: LocalResponse) -> (Response, Vec<(Bytes, Bytes)>) {
    let status = StatusCode::from_u16(local.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let response = Response::new(status).with_body(if local.body.is_empty() {
        ResponseBody::Empty
    } else {
        ResponseBody::Full(Bytes::from(local.body))
    });
    let fields = local
        .headers
        .into_iter()
        .filter(|(name, _)| !name.starts_with(b":") && !is_writer_owned(name))
        .collect();
    (response, fields)
}

/// The fault a chain's verdict stands for, if any.
pub(super) fn fault_of(verdict: &Verdict) -> Option<Fault> {
    match verdict {
        Verdict::Fail { plugin, status } => Some(Fault::Plugin {
            plugin: Arc::clone(plugin),
            status: *status,
            reason: "failed (on_error: fail_closed)",
        }),
        Verdict::Continue | Verdict::Respond(_) => None,
    }
}

/// Run the response-headers callbacks on a locally made response. The fields the plugins
/// leave replace the response's; names it did not have come back to be written after the
/// status line (a `Response` names its fields with static strings).
pub(super) fn edit_local_response(
    request: &Mutex<PluginRequest>,
    mut response: Response,
    max_body_bytes: u64,
) -> Result<(Response, Vec<(Bytes, Bytes)>), Fault> {
    let mut request = request.lock().unwrap_or_else(|p| p.into_inner());
    let mut fields = Vec::with_capacity(map_capacity(response.headers.len()));
    fields.extend(response.headers.iter().map(|(name, value)| {
        (
            Bytes::from_static(name.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        )
    }));
    let verdict = request.on_response_headers(response.status.as_u16(), fields, None);
    if let Some(fault) = fault_of(&verdict) {
        return Err(fault);
    }
    if let Verdict::Respond(local) = verdict {
        return Ok(local_response(local));
    }
    if request.wants_response_body() {
        response = edit_local_body(&mut request, response, max_body_bytes)?;
    }
    let Some(edits) = request.response_edits() else {
        return Ok((response, Vec::new()));
    };
    if let Some(status) = edits.status.and_then(StatusCode::from_u16) {
        response.status = status;
    }
    let mut kept: Vec<(&'static str, HeaderValue)> = Vec::new();
    let mut added = Vec::new();
    for (name, value) in edits.fields() {
        if is_writer_owned(name) {
            continue;
        }
        match response
            .headers
            .iter()
            .find(|(known, _)| known.as_bytes().eq_ignore_ascii_case(name))
        {
            Some((known, _)) => kept.push((known, value.clone().into())),
            None => added.push((name.clone(), value.clone())),
        }
    }
    response.headers = kept;
    Ok((response, added))
}

/// `proxy_on_response_body` on a local response's body: in memory already, or a file
/// range read whole when it is within the body limit (a larger file, or a body made as it
/// is sent, goes out untouched).
fn edit_local_body(
    request: &mut PluginRequest,
    mut response: Response,
    max_body_bytes: u64,
) -> Result<Response, Fault> {
    let body = match response.body {
        ResponseBody::Empty => Vec::new(),
        ResponseBody::Full(ref bytes) => bytes.to_vec(),
        ResponseBody::File {
            ref mut file,
            offset,
            len,
        } if len <= max_body_bytes => {
            use std::io::{Read, Seek, SeekFrom};
            let mut body = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            let read = file
                .seek(SeekFrom::Start(offset))
                .and_then(|_| file.by_ref().take(len).read_to_end(&mut body));
            if read.is_err() || body.len() as u64 != len {
                return Err(Fault::Internal("a file changed under a plugin's body read"));
            }
            body
        }
        ResponseBody::File { .. } | ResponseBody::Stream(_) => return Ok(response),
    };
    match request.on_response_body(body) {
        Verdict::Continue => {
            let body = request.take_response_body();
            response.body = if body.is_empty() {
                ResponseBody::Empty
            } else {
                ResponseBody::Full(Bytes::from(body))
            };
            Ok(response)
        }
        Verdict::Respond(local) => Ok(local_response(local).0),
        verdict => Err(fault_of(&verdict).unwrap_or(Fault::Internal("a failed plugin"))),
    }
}

/// The plugins, seen by the proxy as the hook on its response heads.
impl ResponseHook for Mutex<PluginRequest> {
    fn on_response_head(
        &self,
        status: StatusCode,
        head: &[u8],
        fields: &[HeaderSpan],
        upstream: &str,
    ) -> HeadEdit {
        let mut request = self.lock().unwrap_or_else(|p| p.into_inner());
        // One copy of the head the fields share, rather than one per name and value.
        let head = Bytes::copy_from_slice(head);
        let share = |span: Span| {
            if span.start <= span.end && span.end <= head.len() {
                head.slice(span.start..span.end)
            } else {
                Bytes::new()
            }
        };
        let mut map = Vec::with_capacity(map_capacity(fields.len()));
        map.extend(
            fields
                .iter()
                .map(|field| (share(field.name), share(field.value))),
        );
        match request.on_response_headers(status.as_u16(), map, Some(upstream)) {
            Verdict::Fail { status, .. } => return HeadEdit::Refuse(status),
            // A local answer to a response on its way: the backend's body must not follow a
            // head it does not belong to, so the client gets the error page of that status.
            Verdict::Respond(local) => {
                return HeadEdit::Refuse(
                    StatusCode::from_u16(local.status).unwrap_or(StatusCode::BAD_GATEWAY),
                )
            }
            Verdict::Continue => {}
        }
        let edit = match request.response_edits() {
            None => HeadEdit::Keep,
            Some(edits) => {
                let all = edits.fields();
                // Sized up front: a filtered iterator would grow the vector twice or more.
                let mut fields = Vec::with_capacity(all.size_hint().1.unwrap_or(0));
                fields.extend(
                    all.filter(|(name, _)| {
                        !name.eq_ignore_ascii_case(b"connection")
                            && !name.eq_ignore_ascii_case(b"keep-alive")
                    })
                    .cloned(),
                );
                HeadEdit::Replace {
                    status: edits
                        .status
                        .and_then(StatusCode::from_u16)
                        .unwrap_or(status),
                    fields,
                }
            }
        };
        edit
    }

    fn wants_response_body(&self) -> bool {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .wants_response_body()
    }

    fn on_response_body(&self, body: Vec<u8>) -> BodyEdit {
        let mut request = self.lock().unwrap_or_else(|p| p.into_inner());
        match request.on_response_body(body) {
            Verdict::Continue => BodyEdit::Send(request.take_response_body()),
            Verdict::Fail { status, .. } => BodyEdit::Refuse(status),
            Verdict::Respond(local) => BodyEdit::Refuse(
                StatusCode::from_u16(local.status).unwrap_or(StatusCode::BAD_GATEWAY),
            ),
        }
    }
}
