//! libFuzzer entry point of the `policy_json` target (see `weir_fuzz::TARGETS`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weir_fuzz::run("policy_json", data));
