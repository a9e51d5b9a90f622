//! A response body read whole before anything of the response is sent: what a plugin that
//! asked for the body (`ResponseHook::wants_response_body`) gets to read and replace. Only
//! then: every other body is relayed piece by piece (`relay.rs`).

use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::AsyncReadExt;

use super::exchange::RELAY_BUFFER_BYTES;
use super::stream::UpstreamStream;
use crate::http::body::{BodyDecoder, BodyLimits, ChunkedDecoder, Step};
use crate::http::response_parser::DeclaredFraming;

/// Why the body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("the response body is over the body limit of {0} bytes")]
    TooLarge(u64),
    #[error("the backend failed mid-body: {0}")]
    Upstream(io::Error),
}

/// Read the body that follows a response head: `buf` holds what came with the head; at
/// most `max_bytes` of body, each read within `read_timeout`. What follows the body stays
/// in `buf`.
pub(super) async fn read_body(
    upstream: &mut UpstreamStream,
    buf: &mut BytesMut,
    framing: DeclaredFraming,
    read_timeout: Duration,
    max_bytes: u64,
) -> Result<Vec<u8>, BufferError> {
    let mut decoder = match framing {
        DeclaredFraming::Length(length) if length > max_bytes => {
            return Err(BufferError::TooLarge(max_bytes))
        }
        DeclaredFraming::Length(length) => Some(BodyDecoder::Length { remaining: length }),
        DeclaredFraming::Chunked => Some(BodyDecoder::Chunked(ChunkedDecoder::new(BodyLimits {
            max_body_bytes: max_bytes,
            max_chunk_ext_bytes: crate::limits::DEFAULT_MAX_CHUNK_EXT_BYTES,
            max_trailer_bytes: RELAY_BUFFER_BYTES,
        }))),
        DeclaredFraming::UntilClose => None,
    };
    let mut body = Vec::new();
    loop {
        let step = match decoder.as_mut() {
            Some(decoder) => decoder.decode(buf).map_err(|error| match error {
                crate::http::error::BodyError::BodyTooLarge => BufferError::TooLarge(max_bytes),
                other => BufferError::Upstream(io::Error::new(io::ErrorKind::InvalidData, other)),
            })?,
            None if buf.is_empty() => Step::NeedMore,
            None => Step::Data {
                start: 0,
                end: buf.len(),
            },
        };
        match step {
            Step::Data { start, end } => {
                if (body.len() + (end - start)) as u64 > max_bytes {
                    return Err(BufferError::TooLarge(max_bytes));
                }
                body.extend_from_slice(&buf[start..end]);
                buf.advance(end);
                continue;
            }
            Step::Done { consumed } => {
                buf.advance(consumed);
                return Ok(body);
            }
            Step::NeedMore => buf.clear(),
        }
        let read = tokio::time::timeout(read_timeout, upstream.read_buf(buf)).await;
        match read {
            Err(_) => {
                return Err(BufferError::Upstream(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no body bytes within the read timeout",
                )))
            }
            Ok(Err(error)) => return Err(BufferError::Upstream(error)),
            // The end of a body read until close; anything else ended early.
            Ok(Ok(0)) if decoder.is_none() => return Ok(body),
            Ok(Ok(0)) => {
                return Err(BufferError::Upstream(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed mid-body",
                )))
            }
            Ok(Ok(_)) => {}
        }
    }
}
