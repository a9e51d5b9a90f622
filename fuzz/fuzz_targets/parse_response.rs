//! Response heads from backends (and the responses that follow on the connection): same
//! verdict at any read boundary, limits honoured, a `Complete` head re-parses alone to itself
//! and its spans, status and framing agree with the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_fuzz::checks::{check_response_stream, Effort};

fuzz_target!(|data: &[u8]| check_response_stream(data, Effort::Sampled));
