//! Typed errors of the HTTP layer and the one table that maps them to response statuses.

use super::response::StatusCode;

/// Why a request head was rejected. Small and `Copy` so the parser stays allocation-free;
/// the connection logs it and answers with [`ParseError::status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("request line longer than the limit")]
    RequestLineTooLong,
    #[error("request head larger than the limit")]
    HeadTooLarge,
    #[error("more header fields than the limit")]
    TooManyHeaders,
    #[error("malformed request line")]
    InvalidRequestLine,
    #[error("invalid method token")]
    InvalidMethod,
    #[error("invalid request target")]
    InvalidTarget,
    #[error("malformed HTTP version")]
    InvalidVersion,
    #[error("HTTP version not supported")]
    UnsupportedVersion,
    #[error("line feed without carriage return")]
    BareLineFeed,
    #[error("carriage return without line feed")]
    BareCarriageReturn,
    #[error("obsolete line folding")]
    ObsoleteLineFolding,
    #[error("whitespace between field name and colon")]
    WhitespaceBeforeColon,
    #[error("invalid header field name")]
    InvalidHeaderName,
    #[error("invalid character in header field value")]
    InvalidHeaderValue,
    #[error("invalid Content-Length")]
    InvalidContentLength,
    #[error("conflicting Content-Length values")]
    ConflictingContentLength,
    #[error("Transfer-Encoding together with Content-Length")]
    TransferEncodingWithContentLength,
    #[error("Transfer-Encoding in an HTTP/1.0 request")]
    TransferEncodingInHttp10,
    #[error("malformed Transfer-Encoding")]
    InvalidTransferEncoding,
    #[error("transfer coding not implemented")]
    UnsupportedTransferCoding,
    #[error("missing Host header")]
    MissingHost,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("invalid Host header")]
    InvalidHost,
    #[error("unsupported expectation")]
    UnsupportedExpectation,
    #[error("malformed status line")]
    InvalidStatusLine,
}

impl ParseError {
    /// The status a client gets for this error. RFC 9112/9110 section in each arm's reason.
    pub fn status(self) -> StatusCode {
        match self {
            ParseError::RequestLineTooLong => StatusCode::URI_TOO_LONG,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            // RFC 9112 §6.1: a transfer coding the server does not understand.
            ParseError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
            ParseError::UnsupportedVersion => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            // RFC 9110 §10.1.1: an expectation we cannot meet.
            ParseError::UnsupportedExpectation => StatusCode::EXPECTATION_FAILED,
            ParseError::InvalidRequestLine
            | ParseError::InvalidMethod
            | ParseError::InvalidTarget
            | ParseError::InvalidVersion
            | ParseError::BareLineFeed
            | ParseError::BareCarriageReturn
            | ParseError::ObsoleteLineFolding
            | ParseError::WhitespaceBeforeColon
            | ParseError::InvalidHeaderName
            | ParseError::InvalidHeaderValue
            | ParseError::InvalidContentLength
            | ParseError::ConflictingContentLength
            | ParseError::TransferEncodingWithContentLength
            | ParseError::TransferEncodingInHttp10
            | ParseError::InvalidTransferEncoding
            | ParseError::MissingHost
            | ParseError::DuplicateHost
            | ParseError::InvalidHost => StatusCode::BAD_REQUEST,
            // Only upstream responses have a status line: the client gets 502 for it.
            ParseError::InvalidStatusLine => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Why a message body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("chunk size is not hexadecimal")]
    InvalidChunkSize,
    #[error("chunk size overflows")]
    ChunkSizeOverflow,
    #[error("chunk extension longer than the limit")]
    ChunkExtensionTooLong,
    #[error("invalid character in chunk extension")]
    InvalidChunkExtension,
    #[error("chunk not terminated by CRLF")]
    InvalidChunkTerminator,
    #[error("invalid trailer field")]
    InvalidTrailer,
    #[error("trailer section larger than the limit")]
    TrailersTooLarge,
    #[error("body larger than the limit")]
    BodyTooLarge,
}

impl BodyError {
    pub fn status(self) -> StatusCode {
        match self {
            BodyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::TrailersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyError::InvalidChunkSize
            | BodyError::ChunkSizeOverflow
            | BodyError::ChunkExtensionTooLong
            | BodyError::InvalidChunkExtension
            | BodyError::InvalidChunkTerminator
            | BodyError::InvalidTrailer => StatusCode::BAD_REQUEST,
        }
    }
}
