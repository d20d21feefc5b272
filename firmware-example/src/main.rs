//! Classifies the embedded MNIST test digits with the embedded int8 model and
//! reports, over semihosting:
//!
//! ```text
//! digit <i> label=<l> pred=<p>          (one line per image)
//! summary: correct=<n> total=<n> insns_per_inference=<n> stack_peak_bytes=<n>
//! ```
//!
//! then exits 0. Any failure (bad model, panic, fault) exits non-zero.
//!
//! `insns_per_inference` is the mean instruction count of `TutorialNet::infer`
//! alone (not input conversion or printing); `stack_peak_bytes` is the deepest
//! stack use of the whole run, including the activation buffers, which live in
//! `main`'s frame.

#![no_std]
#![no_main]

mod cycles;
mod digits;
mod exit;
mod model;
mod stack;

use core::hint::black_box;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use infer_core::{pixels_to_input, TutorialNet, TutorialScratch};

use cycles::TickCounter;

#[entry]
fn main() -> ! {
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        hprintln!("error: core peripherals already taken");
        exit::failure()
    };
    let net = match TutorialNet::from_bytes(model::MODEL) {
        Ok(net) => net,
        Err(error) => {
            hprintln!("error: cannot load the model: {}", error);
            exit::failure()
        }
    };
    let mut scratch = TutorialScratch::new();
    let counter = TickCounter::start(peripherals.SYST);
    stack::paint();

    let mut correct = 0u64;
    let mut total = 0u64;
    let mut ticks = 0u64;
    for (index, digit) in digits::all().enumerate() {
        let input = black_box(pixels_to_input(digit.pixels));
        let start = counter.now();
        let output = net.infer(&input, &mut scratch);
        let end = counter.now();
        let pred = black_box(output).class();
        ticks += end - start;
        total += 1;
        if pred == usize::from(digit.label) {
            correct += 1;
        }
        hprintln!("digit {} label={} pred={}", index, digit.label, pred);
    }

    hprintln!(
        "summary: correct={} total={} insns_per_inference={} stack_peak_bytes={}",
        correct,
        total,
        ticks * cycles::INSNS_PER_TICK / total.max(1),
        stack::peak_bytes()
    );
    exit::success()
}
