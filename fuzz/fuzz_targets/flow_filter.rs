//! libFuzzer entry point of the `flow_filter` target (see `weir_fuzz::TARGETS`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::run("flow_filter", data));
