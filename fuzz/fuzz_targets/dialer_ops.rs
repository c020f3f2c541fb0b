#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    h2rev2_fuzz::dialer_ops(data);
});
