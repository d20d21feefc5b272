//! Arbitrary bytes → the IDX parsers and, for gzip data, the file reader (see
//! `e2e_tests::fuzz`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    e2e_tests::fuzz::idx_reader(data);
});
