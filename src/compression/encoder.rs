//! Streaming encoders over pieces of a body, one per response. Memory is bounded per
//! response by the algorithm's window and tables at the configured level (brotli's window is
//! capped at 1 MiB; zstd's follows its level) plus the compressed bytes of one piece,
//! whatever the body's size: streaming 1 GiB through zstd `fast` raised the daemon's peak
//! RSS by under 2 MiB (tests/compression.rs).
//!
//! Levels, per algorithm (the compression ADR says why):
//!
//! | level      | zstd | brotli | gzip |
//! |------------|------|--------|------|
//! | `fast`     | 1    | 1      | 1    |
//! | `balanced` | 3    | 4      | 6    |
//! | `best`     | 9    | 9      | 9    |
//!
//! Higher settings (zstd 19, brotli 11) cost far too much CPU per request: they are for
//! precompressed sidecars made once at deploy time (`zstd -19`, `brotli -q 11`).

use std::io::{self, Write};

use super::negotiate::Algorithm;

/// `compression.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    #[default]
    Fast,
    Balanced,
    Best,
}

impl Level {
    pub fn parse(text: &str) -> Option<Level> {
        match text {
            "fast" => Some(Level::Fast),
            "balanced" => Some(Level::Balanced),
            "best" => Some(Level::Best),
            _ => None,
        }
    }

    fn zstd(self) -> i32 {
        match self {
            Level::Fast => 1,
            Level::Balanced => 3,
            Level::Best => 9,
        }
    }

    fn brotli(self) -> u32 {
        match self {
            Level::Fast => 1,
            Level::Balanced => 4,
            Level::Best => 9,
        }
    }

    fn gzip(self) -> flate2::Compression {
        flate2::Compression::new(match self {
            Level::Fast => 1,
            Level::Balanced => 6,
            Level::Best => 9,
        })
    }
}

/// Brotli's window, log2 bytes: 1 MiB rather than the default 4 MiB keeps an encoder's
/// memory bounded for a small loss on bodies larger than a megabyte.
const BROTLI_WINDOW_LOG: u32 = 20;

/// Brotli's internal output buffer.
const BROTLI_BUFFER_BYTES: usize = 16 * 1024;

/// One body's encoder. Compressed bytes collect in an internal buffer that [`Encoder::write`]
/// hands over after each piece, so the caller sends them before reading the next piece.
pub struct Encoder {
    inner: Inner,
}

enum Inner {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    // Boxed: its state is several KiB, and an encoder lives in a response body.
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithm = match self.inner {
            Inner::Zstd(_) => "zstd",
            Inner::Brotli(_) => "br",
            Inner::Gzip(_) => "gzip",
        };
        f.debug_struct("Encoder")
            .field("algorithm", &algorithm)
            .finish()
    }
}

impl Encoder {
    pub fn new(algorithm: Algorithm, level: Level) -> io::Result<Encoder> {
        let inner = match algorithm {
            Algorithm::Zstd => {
                Inner::Zstd(zstd::stream::write::Encoder::new(Vec::new(), level.zstd())?)
            }
            Algorithm::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER_BYTES,
                level.brotli(),
                BROTLI_WINDOW_LOG,
            ))),
            Algorithm::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(Vec::new(), level.gzip())),
        };
        Ok(Encoder { inner })
    }

    /// Compress `input`; `out` (emptied first) receives the compressed bytes ready so far,
    /// which may be none. With `flush`, everything given so far is made decodable (a proxied
    /// stream's pieces then reach the client without waiting for the next).
    pub fn write(&mut self, input: &[u8], flush: bool, out: &mut Vec<u8>) -> io::Result<()> {
        match &mut self.inner {
            Inner::Zstd(encoder) => write_piece(encoder, input, flush)?,
            Inner::Brotli(encoder) => write_piece(encoder.as_mut(), input, flush)?,
            Inner::Gzip(encoder) => write_piece(encoder, input, flush)?,
        }
        // The two buffers trade places: no allocation per piece once both have grown.
        out.clear();
        std::mem::swap(self.buffer(), out);
        Ok(())
    }

    /// End the stream: the last compressed bytes.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        match self.inner {
            Inner::Zstd(encoder) => encoder.finish(),
            Inner::Brotli(encoder) => Ok(encoder.into_inner()),
            Inner::Gzip(encoder) => encoder.finish(),
        }
    }

    fn buffer(&mut self) -> &mut Vec<u8> {
        match &mut self.inner {
            Inner::Zstd(encoder) => encoder.get_mut(),
            Inner::Brotli(encoder) => encoder.get_mut(),
            Inner::Gzip(encoder) => encoder.get_mut(),
        }
    }
}

fn write_piece<W: Write>(encoder: &mut W, input: &[u8], flush: bool) -> io::Result<()> {
    encoder.write_all(input)?;
    if flush {
        encoder.flush()?;
    }
    Ok(())
}

thread_local! {
    /// One zstd context per worker thread, with the level it was made for: making a context
    /// per response (allocating and clearing its tables) cost more than compressing a
    /// 100 KiB page at level 1.
    static ZSTD_CONTEXT: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Compress a body held whole in memory (one frame, its size known: zstd records it).
pub fn compress_whole(algorithm: Algorithm, level: Level, body: &[u8]) -> io::Result<Vec<u8>> {
    match algorithm {
        Algorithm::Zstd => ZSTD_CONTEXT.with(|cell| {
            let mut slot = cell.borrow_mut();
            let level = level.zstd();
            let compressor = match &mut *slot {
                Some((made_for, compressor)) if *made_for == level => compressor,
                _ => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
            };
            compressor.compress(body)
        }),
        Algorithm::Brotli | Algorithm::Gzip => {
            let mut encoder = Encoder::new(algorithm, level)?;
            let mut first = Vec::new();
            encoder.write(body, false, &mut first)?;
            first.extend_from_slice(&encoder.finish()?);
            Ok(first)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn decode(algorithm: Algorithm, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match algorithm {
            Algorithm::Zstd => {
                out = zstd::stream::decode_all(bytes).expect("zstd decodes");
            }
            Algorithm::Brotli => {
                brotli::Decompressor::new(bytes, 4096)
                    .read_to_end(&mut out)
                    .expect("brotli decodes");
            }
            Algorithm::Gzip => {
                flate2::read::GzDecoder::new(bytes)
                    .read_to_end(&mut out)
                    .expect("gzip decodes");
            }
        }
        out
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| format!("<li>item {} of the list</li>\n", i % 977).into_bytes())
            .take(300_000)
            .collect()
    }

    #[test]
    fn streamed_pieces_round_trip_for_every_algorithm_and_level() {
        let body = sample();
        for algorithm in Algorithm::ALL {
            for level in [Level::Fast, Level::Balanced, Level::Best] {
                for flush in [false, true] {
                    let mut encoder = Encoder::new(algorithm, level).expect("encoder");
                    let mut wire = Vec::new();
                    let mut out = Vec::new();
                    for piece in body.chunks(7_001) {
                        encoder.write(piece, flush, &mut out).expect("write");
                        wire.extend_from_slice(&out);
                    }
                    wire.extend_from_slice(&encoder.finish().expect("finish"));
                    assert!(wire.len() < body.len() / 4, "{algorithm:?} {level:?}");
                    assert!(
                        decode(algorithm, &wire) == body,
                        "{algorithm:?} {level:?} {flush}"
                    );
                }
            }
        }
    }

    #[test]
    fn whole_bodies_round_trip() {
        let body = sample();
        for algorithm in Algorithm::ALL {
            let wire = compress_whole(algorithm, Level::Fast, &body).expect("compress");
            assert!(decode(algorithm, &wire) == body, "{algorithm:?}");
        }
        let empty = compress_whole(Algorithm::Gzip, Level::Fast, b"").expect("compress");
        assert!(decode(Algorithm::Gzip, &empty).is_empty());
    }

    #[test]
    fn a_flush_makes_what_was_written_decodable() {
        let mut encoder = Encoder::new(Algorithm::Gzip, Level::Fast).expect("encoder");
        let mut out = Vec::new();
        encoder
            .write(b"event: one\n\n", true, &mut out)
            .expect("write");
        let mut partial = Vec::new();
        let mut decoder = flate2::write::GzDecoder::new(&mut partial);
        decoder.write_all(&out).expect("decode");
        decoder.flush().expect("flush");
        drop(decoder);
        assert_eq!(partial, b"event: one\n\n");
    }
}
