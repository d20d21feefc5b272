//! The boards the kit runs on, one table for every side: the trainer's `summary --board`
//! (flash and RAM), the firmware's build script (target, memory map, SysTick rate), and the
//! harnesses that build and run it under QEMU (`cargo xtask qemu`/`bench-mcu`, the
//! end-to-end tests: target, `-cpu`, batch size).

use infer_core::stack::prepared::Preparation;
use infer_core::stack::Pixels;

/// An emulated board: what it has, how to build for it and how QEMU runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// Name as QEMU's `-machine` knows it: `--board`, `FIRMWARE_BOARD`.
    pub name: &'static str,
    /// The CPU, for people.
    pub core: &'static str,
    /// Flash (or the code memory QEMU maps) in bytes: its memory map's `FLASH` length.
    pub flash: usize,
    /// RAM in bytes: its memory map's `RAM` length.
    pub ram: usize,
    /// Rust target triple of its firmware.
    pub target: &'static str,
    /// QEMU `-cpu`.
    pub cpu: &'static str,
    /// Its memory map in `firmware-example/memory/`.
    pub memory: &'static str,
    /// Instructions per SysTick tick under `-icount shift=0`, as numerator and denominator:
    /// QEMU advances 1 ns per instruction, and SysTick counts at the core clock (MPS2:
    /// 25 MHz, 40 ns; nRF51: 16 MHz, 62.5 ns). The firmware checks it against a counted
    /// loop at every start.
    pub insns_per_tick: (u32, u32),
    /// Digits one firmware image holds at most (its flash, less the program and a model);
    /// larger sets run in batches of this size.
    pub max_digits: usize,
}

const MIB: usize = 1024 * 1024;

/// Every board, as QEMU 7.2 models them (`docs/system/arm/mps2.rst`, `microbit.rst`); the
/// first is the default. The MPS2 figures are the 4 MiB code SSRAM and 4 MiB data SSRAM.
/// The Cortex-M55 builds with `-C target-cpu=cortex-m55` (firmware-example's
/// `.cargo/config.toml`), which enables its DSP and Helium (MVE) instructions.
pub const BOARDS: [Board; 5] = [
    Board {
        name: "mps2-an386",
        core: "Cortex-M4F",
        flash: 4 * MIB,
        ram: 4 * MIB,
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m4",
        memory: "mps2.x",
        insns_per_tick: (40, 1),
        max_digits: 4_000,
    },
    Board {
        name: "mps2-an385",
        core: "Cortex-M3",
        flash: 4 * MIB,
        ram: 4 * MIB,
        target: "thumbv7m-none-eabi",
        cpu: "cortex-m3",
        memory: "mps2.x",
        insns_per_tick: (40, 1),
        max_digits: 4_000,
    },
    Board {
        name: "mps2-an500",
        core: "Cortex-M7",
        flash: 4 * MIB,
        ram: 4 * MIB,
        target: "thumbv7em-none-eabihf",
        cpu: "cortex-m7",
        memory: "mps2.x",
        insns_per_tick: (40, 1),
        max_digits: 4_000,
    },
    Board {
        name: "microbit",
        core: "Cortex-M0 (nRF51822)",
        flash: 256 * 1024,
        ram: 16 * 1024,
        target: "thumbv6m-none-eabi",
        cpu: "cortex-m0",
        memory: "microbit.x",
        insns_per_tick: (125, 2),
        // 256 KiB of flash: ~20 KiB of program and a ~55 KiB model leave room for about
        // 220 digits; 200 keeps a margin for larger models.
        max_digits: 200,
    },
    Board {
        name: "mps3-an547",
        core: "Cortex-M55 (Helium)",
        // The 2 MiB SRAM holds the program (the ITCM only its reset vector) and the 512 KiB
        // DTCM the data (`firmware-example/memory/mps3-an547.x`).
        flash: 2 * MIB,
        ram: 512 * 1024,
        target: "thumbv8m.main-none-eabihf",
        cpu: "cortex-m55",
        memory: "mps3-an547.x",
        // SysTick counts the 32 MHz system clock: 31.25 ns.
        insns_per_tick: (125, 4),
        max_digits: 2_000,
    },
];

impl Board {
    /// Conv pixels infer-core computes at once on the board's core in a default build
    /// (`infer_core::stack::Pixels::BUILT` there): one on the Cortex-M0, whose kernels take
    /// one at a time (four would only cost RAM), else four.
    pub fn default_pixels(&self) -> Pixels {
        if self.target.starts_with("thumbv6m") {
            Pixels::One
        } else {
            Pixels::Four
        }
    }

    /// How its kernels take weights prepared in flash beside the model
    /// (`infer_core::stack::prepared`), if they do: widened on the DSP cores without Helium
    /// (M4F, M7), whose kernels would otherwise unpack each group of four weights again and
    /// again; dense units paired on the M3; on the M55 (which multiplies int8 by int8 as
    /// the weights are) each dense layer's offset terms; on the M0 (no long multiply, one
    /// pixel at a time) its convs' weights widened to words.
    pub fn preparation(&self) -> Option<Preparation> {
        Preparation::for_target(self.target)
    }
}

/// The board called `name`.
pub fn board(name: &str) -> Option<&'static Board> {
    BOARDS.iter().find(|b| b.name == name)
}

/// The names of every board, comma-separated (for messages).
pub fn names() -> String {
    BOARDS.map(|b| b.name).join(", ")
}
