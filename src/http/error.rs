//! Typed errors of the HTTP layer. What the client is answered for each is decided by the
//! error table (`fault.rs`), not here.

/// Why a request head was rejected. Small and `Copy` so the parser stays allocation-free;
/// the connection logs it and answers with the status the error table gives it.
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

/// Why the head of a request Sentinel sends on its own behalf could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestHeadError {
    #[error("the method has no name to send")]
    UnnamedMethod,
    #[error("the target is not an origin-form path of visible ASCII")]
    InvalidTarget,
}
