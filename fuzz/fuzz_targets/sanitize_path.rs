//! Request paths: whatever `sanitize_path` accepts is plain segments that cannot leave the root.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_fuzz::checks::check_sanitize_path;

fuzz_target!(|data: &[u8]| check_sanitize_path(&String::from_utf8_lossy(data)));
