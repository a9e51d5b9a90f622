//! PURE message-body framing: a decoder per framing (length, chunked with trailers) that
//! turns received bytes into body data without buffering the body. No I/O.
//!
//! The caller owns the buffer: it hands [`BodyDecoder::decode`] whatever it has, gets back
//! how many bytes were used and, when there is body data, where it lies in them. Chunk
//! metadata is consumed byte by byte through an explicit state machine, so any read
//! boundary gives the same result.

use super::error::BodyError;
use super::request::RequestFraming;

/// Limits the body decoders enforce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// Largest decoded body (sum of chunk sizes or the Content-Length). Breach: 413.
    pub max_body_bytes: u64,
    /// Longest chunk extension of a single chunk. Breach: 400.
    pub max_chunk_ext_bytes: usize,
    /// Largest trailer section. Breach: 431.
    pub max_trailer_bytes: usize,
}

/// One step of decoding. Every caller (the proxy both ways, the connection discarding an
/// unwanted body) runs the same loop: `Data` → use `input[start..end]`, drop `end` bytes;
/// `Done` → drop `consumed` bytes and stop; `NeedMore` → drop everything, read more. Decode
/// before each read even when nothing is buffered: a body whose length ran out reports
/// `Done` without waiting for bytes that are not coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Body bytes at `input[start..end]`; `end` bytes of the input were used.
    Data { start: usize, end: usize },
    /// Everything given was framing and has been used; the body needs more bytes.
    NeedMore,
    /// The body ended after `consumed` bytes of this input; the rest belongs to the next
    /// message.
    Done { consumed: usize },
}

/// A body decoder for one message.
#[derive(Debug, Clone)]
pub enum BodyDecoder {
    Length { remaining: u64 },
    Chunked(ChunkedDecoder),
}

impl BodyDecoder {
    /// The decoder for a request's framing; `Err(BodyTooLarge)` when a Content-Length
    /// already exceeds the limit, so no byte of such a body is read.
    pub fn for_request(
        framing: RequestFraming,
        limits: BodyLimits,
    ) -> Result<BodyDecoder, BodyError> {
        match framing {
            RequestFraming::Empty => Ok(BodyDecoder::Length { remaining: 0 }),
            RequestFraming::Length(length) if length > limits.max_body_bytes => {
                Err(BodyError::BodyTooLarge)
            }
            RequestFraming::Length(length) => Ok(BodyDecoder::Length { remaining: length }),
            RequestFraming::Chunked => Ok(BodyDecoder::Chunked(ChunkedDecoder::new(limits))),
        }
    }

    pub fn is_done(&self) -> bool {
        match self {
            BodyDecoder::Length { remaining } => *remaining == 0,
            BodyDecoder::Chunked(chunked) => chunked.is_done(),
        }
    }

    /// Bytes still to come, when the framing says so (not for chunked bodies).
    pub fn remaining_hint(&self) -> Option<u64> {
        match self {
            BodyDecoder::Length { remaining } => Some(*remaining),
            BodyDecoder::Chunked(_) => None,
        }
    }

    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        match self {
            BodyDecoder::Length { remaining } => {
                if *remaining == 0 {
                    return Ok(Step::Done { consumed: 0 });
                }
                if input.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *remaining -= take as u64;
                Ok(Step::Data {
                    start: 0,
                    end: take,
                })
            }
            BodyDecoder::Chunked(chunked) => chunked.decode(input),
        }
    }
}

/// Where the chunked decoder is in RFC 9112 §7.1's grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkedState {
    /// Reading hex digits of a chunk size; `digits` so far.
    Size {
        digits: u8,
    },
    /// After the size, in bad whitespace before a `;`.
    SizeWhitespace,
    /// Inside a chunk extension.
    Extension,
    /// Saw the CR ending the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line; `seen_colon` once the name ended.
    TrailerLine {
        seen_colon: bool,
    },
    TrailerLf,
    FinalLf,
    Done,
}

/// Decoder of `Transfer-Encoding: chunked` bodies. Trailers are validated and discarded.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkedState,
    limits: BodyLimits,
    /// Size of the chunk being read, then the bytes of it still to come.
    chunk_remaining: u64,
    extension_len: usize,
    trailer_len: usize,
    total: u64,
}

/// 16 hex digits fill a u64; more would overflow, and leading zeros beyond that are not
/// something a sane sender produces, so the cap also bounds the size line.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

impl ChunkedDecoder {
    pub fn new(limits: BodyLimits) -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkedState::Size { digits: 0 },
            limits,
            chunk_remaining: 0,
            extension_len: 0,
            trailer_len: 0,
            total: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkedState::Done
    }

    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        if self.state == ChunkedState::Done {
            // Whatever follows belongs to the next message.
            return Ok(Step::Done { consumed: 0 });
        }
        let mut pos = 0;
        while pos < input.len() {
            if self.state == ChunkedState::Data {
                let available = input.len() - pos;
                let take = usize::try_from(self.chunk_remaining)
                    .unwrap_or(usize::MAX)
                    .min(available);
                self.chunk_remaining -= take as u64;
                if self.chunk_remaining == 0 {
                    self.state = ChunkedState::DataCr;
                }
                return Ok(Step::Data {
                    start: pos,
                    end: pos + take,
                });
            }
            self.advance(input[pos])?;
            pos += 1;
            if self.state == ChunkedState::Done {
                return Ok(Step::Done { consumed: pos });
            }
        }
        if self.state == ChunkedState::Done {
            return Ok(Step::Done { consumed: pos });
        }
        Ok(Step::NeedMore)
    }

    /// Feed one byte of chunk framing.
    fn advance(&mut self, b: u8) -> Result<(), BodyError> {
        use ChunkedState::*;
        self.state = match self.state {
            Size { digits } => match (b, hex_value(b)) {
                (_, Some(value)) => {
                    if digits == MAX_CHUNK_SIZE_DIGITS {
                        return Err(BodyError::ChunkSizeOverflow);
                    }
                    self.chunk_remaining = self
                        .chunk_remaining
                        .checked_mul(16)
                        .and_then(|v| v.checked_add(u64::from(value)))
                        .ok_or(BodyError::ChunkSizeOverflow)?;
                    Size { digits: digits + 1 }
                }
                _ if digits == 0 => return Err(BodyError::InvalidChunkSize),
                (b'\r', _) => SizeLf,
                (b'\n', _) => return Err(BodyError::InvalidChunkTerminator),
                (b';', _) => self.count_extension_byte(Extension)?,
                (b' ' | b'\t', _) => self.count_extension_byte(SizeWhitespace)?,
                _ => return Err(BodyError::InvalidChunkSize),
            },
            SizeWhitespace => match b {
                b' ' | b'\t' => self.count_extension_byte(SizeWhitespace)?,
                b';' => self.count_extension_byte(Extension)?,
                _ => return Err(BodyError::InvalidChunkSize),
            },
            Extension => match b {
                b'\r' => SizeLf,
                b'\t' | 0x20..=0x7e | 0x80..=0xff => self.count_extension_byte(Extension)?,
                _ => return Err(BodyError::InvalidChunkExtension),
            },
            SizeLf => {
                if b != b'\n' {
                    return Err(BodyError::InvalidChunkTerminator);
                }
                self.extension_len = 0;
                self.begin_chunk()?
            }
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => Size { digits: 0 },
            DataCr | DataLf => return Err(BodyError::InvalidChunkTerminator),
            TrailerStart => match b {
                b'\r' => FinalLf,
                // obs-fold is no more welcome in trailers than in the head.
                b' ' | b'\t' => return Err(BodyError::InvalidTrailer),
                _ if super::parser::is_tchar(b) => {
                    self.count_trailer_byte()?;
                    TrailerLine { seen_colon: false }
                }
                _ => return Err(BodyError::InvalidTrailer),
            },
            TrailerLine { seen_colon } => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' if seen_colon => TrailerLf,
                    b':' => TrailerLine { seen_colon: true },
                    _ if seen_colon && matches!(b, b'\t' | 0x20..=0x7e | 0x80..=0xff) => {
                        TrailerLine { seen_colon }
                    }
                    _ if !seen_colon && super::parser::is_tchar(b) => TrailerLine { seen_colon },
                    _ => return Err(BodyError::InvalidTrailer),
                }
            }
            TrailerLf if b == b'\n' => TrailerStart,
            TrailerLf => return Err(BodyError::InvalidTrailer),
            FinalLf if b == b'\n' => Done,
            FinalLf => return Err(BodyError::InvalidChunkTerminator),
            // `decode` returns before feeding bytes in these states.
            Data | Done => self.state,
        };
        Ok(())
    }

    /// The size line ended: account the chunk against the body limit before reading it.
    fn begin_chunk(&mut self) -> Result<ChunkedState, BodyError> {
        if self.chunk_remaining == 0 {
            return Ok(ChunkedState::TrailerStart);
        }
        self.total = self
            .total
            .checked_add(self.chunk_remaining)
            .filter(|&total| total <= self.limits.max_body_bytes)
            .ok_or(BodyError::BodyTooLarge)?;
        Ok(ChunkedState::Data)
    }

    /// Everything between the chunk size and its CR counts toward the extension limit.
    fn count_extension_byte(&mut self, next: ChunkedState) -> Result<ChunkedState, BodyError> {
        self.extension_len += 1;
        if self.extension_len > self.limits.max_chunk_ext_bytes {
            return Err(BodyError::ChunkExtensionTooLong);
        }
        Ok(next)
    }

    fn count_trailer_byte(&mut self) -> Result<(), BodyError> {
        self.trailer_len += 1;
        if self.trailer_len > self.limits.max_trailer_bytes {
            return Err(BodyError::TrailersTooLarge);
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: BodyLimits = BodyLimits {
        max_body_bytes: 1024,
        max_chunk_ext_bytes: 16,
        max_trailer_bytes: 64,
    };

    /// Decode `input` fed in pieces of `piece` bytes, the way the connection does: the
    /// caller keeps unconsumed bytes and appends the next read. Returns the body and the
    /// number of input bytes the body used.
    fn decode_in_pieces(
        mut decoder: BodyDecoder,
        input: &[u8],
        piece: usize,
    ) -> Result<(Vec<u8>, usize), BodyError> {
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut fed = 0;
        let mut used = 0;
        loop {
            match decoder.decode(&pending)? {
                Step::Data { start, end } => {
                    body.extend_from_slice(&pending[start..end]);
                    pending.drain(..end);
                    used += end;
                }
                Step::Done { consumed } => return Ok((body, used + consumed)),
                Step::NeedMore => {
                    used += pending.len();
                    pending.clear();
                    if fed == input.len() {
                        return Ok((body, usize::MAX));
                    }
                    let next = (fed + piece).min(input.len());
                    pending.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    /// Same verdict for every piece size (H1-023 for bodies).
    fn chunked(input: &[u8]) -> Result<(Vec<u8>, usize), BodyError> {
        let whole = decode_in_pieces(
            BodyDecoder::Chunked(ChunkedDecoder::new(LIMITS)),
            input,
            input.len().max(1),
        );
        for piece in 1..input.len().min(40) {
            let split = decode_in_pieces(
                BodyDecoder::Chunked(ChunkedDecoder::new(LIMITS)),
                input,
                piece,
            );
            assert_eq!(split, whole, "piece size {piece}");
        }
        whole
    }

    #[test]
    fn h1_030_chunked_body_with_extensions_and_trailers() {
        let input =
            b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\nX-Other: two\r\n\r\nNEXT";
        let (body, used) = chunked(input).unwrap();
        assert_eq!(body, b"hello world");
        assert_eq!(used, input.len() - 4);
    }

    #[test]
    fn h1_030_uppercase_hex_and_leading_zeros() {
        let (body, _) = chunked(b"0000A\r\n0123456789\r\n0\r\n\r\n").unwrap();
        assert_eq!(body.len(), 10);
    }

    #[test]
    fn h1_030_bad_or_overflowing_sizes() {
        assert_eq!(chunked(b"x\r\n"), Err(BodyError::InvalidChunkSize));
        assert_eq!(chunked(b"\r\n"), Err(BodyError::InvalidChunkSize));
        assert_eq!(chunked(b"-1\r\n"), Err(BodyError::InvalidChunkSize));
        assert_eq!(chunked(b"0x5\r\n"), Err(BodyError::InvalidChunkSize));
        assert_eq!(
            chunked(b"5 \r\nhello\r\n"),
            Err(BodyError::InvalidChunkSize)
        );
        assert_eq!(
            chunked(b"ffffffffffffffffff\r\n"),
            Err(BodyError::ChunkSizeOverflow)
        );
        // 17 digits even if the value would fit: the size line is bounded.
        assert_eq!(
            chunked(b"00000000000000001\r\n"),
            Err(BodyError::ChunkSizeOverflow)
        );
        // Whitespace before the extension is allowed (BWS), after the size alone it is not.
        assert!(chunked(b"5 ;a=b\r\nhello\r\n0\r\n\r\n").is_ok());
    }

    #[test]
    fn h1_031_chunk_extension_limit_edge() {
        // The limit covers everything between the size and the CRLF, `;` included.
        let at = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(15));
        assert!(chunked(at.as_bytes()).is_ok());
        let over = format!("1;{}\r\na\r\n0\r\n\r\n", "e".repeat(16));
        assert_eq!(
            chunked(over.as_bytes()),
            Err(BodyError::ChunkExtensionTooLong)
        );
        assert_eq!(
            chunked(b"1;a\x00\r\na\r\n0\r\n\r\n"),
            Err(BodyError::InvalidChunkExtension)
        );
        assert_eq!(
            chunked(b"1;a\nb\r\na\r\n0\r\n\r\n"),
            Err(BodyError::InvalidChunkExtension)
        );
    }

    #[test]
    fn h1_032_chunk_data_must_end_in_crlf() {
        assert_eq!(
            chunked(b"5\r\nhelloX\r\n"),
            Err(BodyError::InvalidChunkTerminator)
        );
        assert_eq!(
            chunked(b"5\r\nhello\n0\r\n\r\n"),
            Err(BodyError::InvalidChunkTerminator)
        );
        assert_eq!(
            chunked(b"5\nhello\r\n"),
            Err(BodyError::InvalidChunkTerminator)
        );
        assert_eq!(
            chunked(b"0\r\n\r\r"),
            Err(BodyError::InvalidChunkTerminator)
        );
    }

    #[test]
    fn h1_033_trailers_are_validated_and_bounded() {
        assert_eq!(
            chunked(b"0\r\n folded\r\n\r\n"),
            Err(BodyError::InvalidTrailer)
        );
        assert_eq!(
            chunked(b"0\r\nNoColon\r\n\r\n"),
            Err(BodyError::InvalidTrailer)
        );
        assert_eq!(
            chunked(b"0\r\nX: a\x01\r\n\r\n"),
            Err(BodyError::InvalidTrailer)
        );
        assert_eq!(chunked(b"0\r\nX: a\r\r\n"), Err(BodyError::InvalidTrailer));
        let big = format!("0\r\nX: {}\r\n\r\n", "v".repeat(64));
        assert_eq!(chunked(big.as_bytes()), Err(BodyError::TrailersTooLarge));
    }

    #[test]
    fn h1_034_chunked_body_limit_edge() {
        let exact = format!("400\r\n{}\r\n0\r\n\r\n", "a".repeat(1024));
        assert_eq!(chunked(exact.as_bytes()).unwrap().0.len(), 1024);
        // The chunk that crosses the limit is refused before any of it is read.
        let over = format!("400\r\n{}\r\n1\r\n", "a".repeat(1024));
        assert_eq!(chunked(over.as_bytes()), Err(BodyError::BodyTooLarge));
    }

    #[test]
    fn h1_034_content_length_over_limit_is_refused_up_front() {
        assert!(BodyDecoder::for_request(RequestFraming::Length(1024), LIMITS).is_ok());
        assert_eq!(
            BodyDecoder::for_request(RequestFraming::Length(1025), LIMITS).err(),
            Some(BodyError::BodyTooLarge)
        );
    }

    #[test]
    fn length_body_stops_at_its_length() {
        let decoder = BodyDecoder::for_request(RequestFraming::Length(5), LIMITS).unwrap();
        for piece in 1..8 {
            let (body, used) = decode_in_pieces(decoder.clone(), b"helloGET", piece).unwrap();
            assert_eq!(body, b"hello");
            assert_eq!(used, 5);
        }
        let empty = BodyDecoder::for_request(RequestFraming::Empty, LIMITS).unwrap();
        assert!(empty.is_done());
    }

    #[test]
    fn a_finished_chunked_body_consumes_nothing_more() {
        let mut decoder = ChunkedDecoder::new(LIMITS);
        assert_eq!(decoder.decode(b"0\r\n\r\n"), Ok(Step::Done { consumed: 5 }));
        assert_eq!(decoder.decode(b"GET"), Ok(Step::Done { consumed: 0 }));
    }

    #[test]
    fn truncated_chunked_body_needs_more() {
        let (body, used) = chunked(b"5\r\nhel").unwrap();
        assert_eq!(body, b"hel");
        assert_eq!(used, usize::MAX, "not done");
    }
}
