//! Arbitrary bytes → `TutorialNet::from_bytes` → one inference (see `e2e_tests::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    e2e_tests::fuzz::model_loader(data);
});
