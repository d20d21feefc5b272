//! A firmware of its own, as a user would write it outside this repository:
//! `build.rs` turns a model.bin into the typed network with
//! `model_spec::codegen::build`, and this program `include!`s it, loads the
//! embedded model, classifies the first few images of the kit's digits file and
//! prints, over semihosting, one line per image:
//!
//! ```text
//! input <i> class=<c> logits <l0> … <lN>
//! ```
//!
//! then `done inputs=<n>`, and exits 0 (QEMU exits with it). A model that does
//! not load, or a panic, exits non-zero.

#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug::{self, ExitStatus, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::{hprint, hprintln};

/// The network build.rs generated from the model: its types, buffers and `MODEL`.
#[allow(dead_code)] // the generated module has more than this program uses
mod network {
    include!(concat!(env!("OUT_DIR"), "/network.rs"));
}

/// Images to classify: records of `[label: u8][28×28 pixels: u8]`.
static DIGITS: &[u8] = include_bytes!("../../../firmware-example/assets/digits.bin");

/// How many of them.
const COUNT: usize = 8;

const _: () = assert!(
    network::INPUT == 28 * 28,
    "the digits file holds 28×28×1 images"
);

#[entry]
fn main() -> ! {
    let net = match network::Network::from_bytes(network::MODEL) {
        Ok(net) => net,
        Err(error) => {
            hprintln!("error: cannot load the model: {}", error);
            exit(EXIT_FAILURE)
        }
    };
    let mut scratch = network::Scratch::new();
    let mut input = [0; network::INPUT];
    let records = DIGITS.chunks_exact(1 + network::INPUT).take(COUNT);
    let mut count = 0;
    for (index, record) in records.enumerate() {
        let Ok(pixels) = record[1..].try_into() else {
            exit(EXIT_FAILURE)
        };
        network::pixels_to_input(pixels, &mut input);
        let logits = net.infer(&input, &mut scratch);
        hprint!("input {} class={} logits", index, argmax(&logits));
        for logit in logits {
            hprint!(" {}", logit);
        }
        hprintln!();
        count += 1;
    }
    hprintln!("done inputs={}", count);
    exit(EXIT_SUCCESS)
}

/// The index of the largest value (the first, on ties).
fn argmax<T: PartialOrd>(values: &[T]) -> usize {
    (0..values.len()).fold(0, |best, i| if values[i] > values[best] { i } else { best })
}

/// Ends the run: QEMU exits with `status`.
fn exit(status: ExitStatus) -> ! {
    debug::exit(status);
    // Only reached without a semihosting host.
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    exit(EXIT_FAILURE)
}
