//! Checks the board's instructions-per-tick constant against a loop whose
//! instruction count is known exactly.
//!
//! The loop is `subs; bne` (two instructions per iteration) in inline
//! assembly, so the compiler cannot change it. Running it for `N` and for
//! `2N` iterations and subtracting the two tick counts cancels everything
//! around the loop: the difference is exactly `2N` instructions.

use core::arch::asm;

use crate::cycles::{self, TickCounter};

/// Iterations of the shorter run: 2,000,000 instructions, 32,000 ticks on the
/// micro:bit, 50,000 on MPS2, so one tick of rounding is below 0.01 %.
const ITERATIONS: u32 = 1_000_000;

/// The largest accepted error, in parts per million (0.1 %).
const TOLERANCE_PPM: u64 = 1_000;

/// What one calibration measured.
pub struct Calibration {
    /// Instructions the loop difference executed: `2 · ITERATIONS`.
    pub loop_insns: u64,
    /// The same, measured with SysTick and the board's instructions per tick.
    pub measured_insns: u64,
}

impl Calibration {
    /// True if the measurement is within 0.1 % of the truth.
    pub fn agrees(&self) -> bool {
        self.loop_insns.abs_diff(self.measured_insns) * 1_000_000 <= self.loop_insns * TOLERANCE_PPM
    }
}

/// Runs the two loops and converts the tick difference to instructions.
pub fn run(counter: &TickCounter) -> Calibration {
    let t0 = counter.now();
    spin(ITERATIONS);
    let t1 = counter.now();
    spin(2 * ITERATIONS);
    let t2 = counter.now();
    let ticks = (t2 - t1).saturating_sub(t1 - t0);
    Calibration {
        loop_insns: 2 * u64::from(ITERATIONS),
        measured_insns: cycles::ticks_to_insns(ticks),
    }
}

/// Executes exactly `2 · iterations` instructions (`iterations` ≥ 1).
#[inline(always)]
fn spin(iterations: u32) {
    // SAFETY: the loop only decrements a register the compiler handed over
    // (declared clobbered via `=> _`) and branches within the block; it
    // touches no memory and no stack. It does change the condition flags,
    // which is the default assumption for `asm!`.
    unsafe {
        asm!(
            "2:",
            "subs {n}, #1",
            "bne 2b",
            n = inout(reg) iterations => _,
            options(nomem, nostack),
        );
    }
}
