//! Arbitrary bytes → `StackFile::decode` (model.bin format 2) → one inference with the fast
//! and the reference kernels (see `e2e_tests::fuzz::stack_loader`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    e2e_tests::fuzz::stack_loader(data);
});
