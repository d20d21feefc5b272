//! Classifies the embedded MNIST test digits with the embedded int8 model on
//! the board it was built for and reports, over semihosting:
//!
//! ```text
//! board: <name> insns_per_tick=<num>/<den>
//! calibration: loop_insns=<n> measured_insns=<n>
//! digit <i> label=<l> pred=<p>          (one line per image)
//! logits <i> <l0> … <l9>                 (its int8 logits)
//! layers: prepare=<n> conv_relu_pool=<n> dense=<n> output=<n> argmax=<n>
//! memory: infer_stack_bytes=<n> static_ram_bytes=<n>
//! summary: correct=<n> total=<n> insns_per_inference=<n> stack_peak_bytes=<n>
//! ```
//!
//! then exits 0. Any failure (bad model, calibration off by more than 0.1 %,
//! panic, fault) exits non-zero.
//!
//! - `insns_per_inference`: mean instructions of `TutorialNet::infer` alone
//!   (not input conversion, argmax or printing).
//! - `layers`: mean instructions per stage of the same inference run stage by
//!   stage (`src/layers.rs`); conv, ReLU and max pool are one fused stage.
//! - `infer_stack_bytes`: stack one `TutorialNet::infer` call uses, its
//!   working memory included: all the RAM an inference needs besides its
//!   784-byte input (it uses no statics).
//! - `static_ram_bytes`: the whole firmware's `.data` + `.bss`.
//! - `stack_peak_bytes`: the deepest stack use of the whole run, printing
//!   included.

#![no_std]
#![no_main]

mod calibrate;
mod cycles;
mod digits;
mod exit;
mod layers;
mod model;
mod stack;

use core::hint::black_box;

use cortex_m_rt::entry;
use cortex_m_semihosting::hprintln;
use infer_core::{pixels_to_input, Output, TutorialNet};

use cycles::TickCounter;

/// The network's input.
type Input = [[[i8; 1]; 28]; 28];

/// One inference, kept out of line so that its stack use can be measured and
/// its code found in the ELF (`cargo xtask bench-mcu` sizes this function and
/// everything it calls).
#[inline(never)]
fn infer_digit(net: &TutorialNet<'_>, input: &Input) -> Output<10> {
    net.infer(input)
}

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
    let counter = TickCounter::start(peripherals.SYST);
    hprintln!(
        "board: {} insns_per_tick={}/{}",
        cycles::BOARD,
        cycles::INSNS_PER_TICK_NUM,
        cycles::INSNS_PER_TICK_DEN
    );
    let calibration = calibrate::run(&counter);
    hprintln!(
        "calibration: loop_insns={} measured_insns={}",
        calibration.loop_insns,
        calibration.measured_insns
    );
    if !calibration.agrees() {
        hprintln!(
            "error: SysTick calibration is off by more than 0.1 %: fix {}'s instructions per tick in build.rs",
            cycles::BOARD
        );
        exit::failure()
    }

    let infer_stack = match digits::all().next() {
        Some(digit) => {
            let input = pixels_to_input(digit.pixels);
            stack::depth_of(|| infer_digit(&net, &input)).1
        }
        None => 0,
    };

    stack::paint();
    let mut profile = layers::Profile::default();
    let mut correct = 0u64;
    let mut total = 0u64;
    let mut ticks = 0u64;
    for (index, digit) in digits::all().enumerate() {
        let input = black_box(pixels_to_input(digit.pixels));
        let start = counter.now();
        let output = infer_digit(&net, &input);
        let end = counter.now();
        let pred = black_box(output).class();
        ticks += end - start;
        total += 1;
        if pred == usize::from(digit.label) {
            correct += 1;
        }
        if profile.add(&counter, &net, &input) != pred {
            hprintln!("error: digit {}: the staged inference disagrees", index);
            exit::failure()
        }
        hprintln!("digit {} label={} pred={}", index, digit.label, pred);
        let l = output.logits;
        hprintln!(
            "logits {} {} {} {} {} {} {} {} {} {} {}",
            index,
            l[0],
            l[1],
            l[2],
            l[3],
            l[4],
            l[5],
            l[6],
            l[7],
            l[8],
            l[9]
        );
    }

    let layers = profile.mean(&counter);
    hprintln!(
        "layers: prepare={} conv_relu_pool={} dense={} output={} argmax={}",
        layers.prepare,
        layers.conv_relu_pool,
        layers.dense,
        layers.output,
        layers.argmax
    );
    hprintln!(
        "memory: infer_stack_bytes={} static_ram_bytes={}",
        infer_stack,
        stack::static_bytes()
    );
    hprintln!(
        "summary: correct={} total={} insns_per_inference={} stack_peak_bytes={}",
        correct,
        total,
        cycles::ticks_to_insns(ticks) / total.max(1),
        stack::peak_bytes()
    );
    exit::success()
}
