//! Link-time proof that loading a model and running an inference cannot panic.
//!
//! This binary links what a firmware links — [`TutorialNet::from_bytes`], `infer`,
//! [`Output::class`](infer_core::Output::class) and
//! [`Output::probabilities`](infer_core::Output::probabilities) — built like the firmware
//! (release, LTO, one codegen unit). Its `#[panic_handler]` calls a function that is
//! declared but defined nowhere, so if any panic — an index out of bounds, a slice
//! out of range, an `unwrap`, a division by zero — is still reachable after
//! optimisation, the link fails with `undefined symbol: infer_core_can_panic`.
//!
//! The model and the pixels pass through [`black_box`]: the optimiser may not assume
//! anything about their content, so the proof holds for *any* bytes, the hostile
//! ones included, not just for the committed model. (Arithmetic overflow checks are
//! off in release builds, as in the firmware; the fuzz targets and miri, which run
//! with them on, cover overflow.)
//!
//! `cargo build --release` here must succeed; `cargo build --release --features
//! prove-check-works`, which adds one reachable panic, must fail. `cargo xtask test`
//! runs both, for every Cortex-M target.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;
use cortex_m_rt::entry;
use infer_core::{pixels_to_input, TutorialNet, TutorialScratch};

/// Any model: the committed one stands in for bytes that arrived over a serial line.
static MODEL: &[u8] = include_bytes!("../../../firmware-example/assets/model.bin");

extern "C" {
    /// Defined nowhere: referencing it from reachable code fails the link.
    fn infer_core_can_panic() -> !;
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    // SAFETY: never runs. The function does not exist, so a binary in which this
    // handler is reachable does not link.
    unsafe { infer_core_can_panic() }
}

#[entry]
fn main() -> ! {
    let mut scratch = TutorialScratch::new();
    loop {
        let bytes: &[u8] = black_box(MODEL);
        let pixels: [[u8; 28]; 28] = black_box([[0; 28]; 28]);
        match TutorialNet::from_bytes(bytes) {
            Ok(net) => {
                let input = pixels_to_input(&pixels);
                let output = net.infer(&input);
                black_box(output.class());
                black_box(net.infer_layers(&input, &mut scratch));
                black_box(output.probabilities());
            }
            Err(error) => {
                black_box(error);
            }
        }
        #[cfg(feature = "prove-check-works")]
        {
            // An index the optimiser cannot prove in bounds: a reachable panic.
            black_box(bytes[black_box(usize::MAX)]);
        }
    }
}
