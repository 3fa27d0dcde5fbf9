//! libFuzzer entry point of the `lb_objects` target (see `weir_fuzz::TARGETS`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::run("lb_objects", data));
