//! Request heads (and pipelined requests with their bodies): same verdict at any read
//! boundary, a `Complete` head re-parses alone to itself, `RequestHead` reads back consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_fuzz::checks::{check_request_stream, Effort};

fuzz_target!(|data: &[u8]| check_request_stream(data, Effort::Sampled));
