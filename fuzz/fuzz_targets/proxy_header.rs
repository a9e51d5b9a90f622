//! The PROXY protocol header (v1 text, v2 binary) that precedes a connection from an L4 balancer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_fuzz::checks::check_proxy_header;

fuzz_target!(|data: &[u8]| check_proxy_header(data));
