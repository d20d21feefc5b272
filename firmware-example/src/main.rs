//! Classifies the embedded MNIST test digits with the embedded int8 model on
//! the board it was built for and reports, over semihosting:
//!
//! ```text
//! board: <name> insns_per_tick=<num>/<den>
//! calibration: loop_insns=<n> measured_insns=<n>
//! network: spec=<s> ops=<n> classes=<n> model_bytes=<n> ram_estimate_bytes=<n>
//!                                        (FIRMWARE_SPEC builds only)
//! digit <i> label=<l> pred=<p>          (one line per image)
//! logits <i> <l0> … <l9>                 (its logits: int8 for the tutorial,
//!                                        wide i32 for a spec'd network)
//! layers: prepare=<n> conv_relu_pool=<n> dense=<n> output=<n> argmax=<n>
//! memory: infer_stack_bytes=<n> static_ram_bytes=<n>
//! summary: correct=<n> total=<n> insns_per_inference=<n> stack_peak_bytes=<n>
//! ```
//!
//! then exits 0. Any failure (bad model, calibration off by more than 0.1 %,
//! panic, fault) exits non-zero.
//!
//! The network is the tutorial's (`TutorialNet`, the default) or, built with
//! `FIRMWARE_SPEC`, the one the spec file declares ([`net`]). For a spec'd
//! network the `layers:` line has one `<type>_<index>=<n>` per operation (e.g.
//! `conv2d_0=… maxpool2d_1=… dense_2=…`) and `argmax=<n>`, and the `memory:`
//! line adds `scratch_bytes=<n> load_stack_bytes=<n>`.
//!
//! - `insns_per_inference`: mean instructions of one inference alone
//!   (`net::infer_digit`: not input conversion, argmax or printing).
//! - `layers`: mean instructions per stage of the same inference run stage by
//!   stage (the tutorial's conv, ReLU and max pool are one fused stage).
//! - `infer_stack_bytes`: stack one inference call uses, its working memory
//!   included for the tutorial's streaming inference: all the RAM an inference
//!   needs besides its input (it uses no statics). A spec'd network's ping-pong
//!   buffers and patch live in the digit loop's frame instead: `scratch_bytes`;
//!   `load_stack_bytes` is the stack its loading took (before that frame).
//! - `static_ram_bytes`: the whole firmware's `.data` + `.bss`.
//! - `stack_peak_bytes`: the deepest stack use of the whole run, printing and
//!   the digit loop's frame (with any scratch) included.

#![no_std]
#![no_main]

mod calibrate;
mod cycles;
mod digits;
mod exit;
mod model;
mod net;
mod stack;

use core::hint::black_box;

use cortex_m_rt::entry;
use cortex_m_semihosting::{hprint, hprintln};
use infer_core::kernels::activation::argmax;

use cycles::TickCounter;

#[entry]
fn main() -> ! {
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        hprintln!("error: core peripherals already taken");
        exit::failure()
    };
    let (loaded, load_stack) = stack::depth_of(net::load);
    let network = match loaded {
        Ok(network) => network,
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
            "error: SysTick calibration is off by more than 0.1 %: fix {}'s instructions per tick in build/main.rs",
            cycles::BOARD
        );
        exit::failure()
    }
    net::print_network();
    classify_all(&network, &counter, load_stack)
}

/// Classifies every digit, prints the per-digit lines and the summary, and
/// exits. A function of its own so that its frame (the network's scratch, the
/// input) and the model's loading in `main` (`net::load`, not inlined) never
/// take stack at the same time.
#[inline(never)]
fn classify_all(network: &net::Network, counter: &TickCounter, load_stack: usize) -> ! {
    let mut scratch = net::Scratch::new();
    // One input buffer for every digit: on the micro:bit a second copy of it
    // can be the difference between fitting the RAM and not.
    let mut input = net::ZERO_INPUT;
    let infer_stack = match digits::all().next() {
        Some(digit) => {
            net::fill_input(&mut input, digit.pixels);
            stack::depth_of(|| net::infer_digit(network, &input, &mut scratch)).1
        }
        None => 0,
    };

    stack::paint();
    let mut profile = net::Profile::default();
    let mut correct = 0u64;
    let mut total = 0u64;
    let mut ticks = 0u64;
    for (index, digit) in digits::all().enumerate() {
        net::fill_input(&mut input, digit.pixels);
        // The inference may not assume anything about the input.
        black_box(&mut input);
        let start = counter.now();
        let logits = net::infer_digit(network, &input, &mut scratch);
        let end = counter.now();
        let logits = black_box(logits);
        let pred = argmax(&logits);
        ticks += end - start;
        total += 1;
        if pred == usize::from(digit.label) {
            correct += 1;
        }
        if profile.add(counter, network, &input, &mut scratch) != pred {
            hprintln!("error: digit {}: the staged inference disagrees", index);
            exit::failure()
        }
        hprintln!("digit {} label={} pred={}", index, digit.label, pred);
        hprint!("logits {}", index);
        for logit in logits {
            hprint!(" {}", logit);
        }
        hprintln!();
    }

    profile.print(counter);
    net::print_memory(infer_stack, load_stack, stack::static_bytes());
    hprintln!(
        "summary: correct={} total={} insns_per_inference={} stack_peak_bytes={}",
        correct,
        total,
        cycles::ticks_to_insns(ticks) / total.max(1),
        stack::peak_bytes()
    );
    exit::success()
}
