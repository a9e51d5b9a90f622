//! Chunked bodies: same data and the same end (done where, or which error) at any read
//! boundary; accepted bodies match a plain reading; well-formed encodings decode back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_fuzz::checks::{check_chunked, Effort};

fuzz_target!(|data: &[u8]| check_chunked(data, Effort::Sampled));
