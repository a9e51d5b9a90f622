//! Configuration: `Config::from_yaml` on any UTF-8 text returns instead of panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentinel_fuzz::checks::check_config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_config(text);
    }
});
