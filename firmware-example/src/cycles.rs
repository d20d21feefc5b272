//! Instruction counting with SysTick.
//!
//! SysTick runs from the processor clock with the largest reload value and an
//! exception handler counts the wraps, so a long run never overflows. Under
//! QEMU with `-icount shift=0` the virtual clock advances 1 ns per executed
//! instruction, so a SysTick tick is a fixed number of instructions.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;

/// SysTick's 24-bit reload value: the longest period between wraps.
const RELOAD: u32 = 0x00FF_FFFF;

/// The board this firmware was built for (`build/main.rs`, `FIRMWARE_BOARD`).
pub const BOARD: &str = env!("FIRMWARE_BOARD_NAME");

/// Instructions per SysTick tick under `-icount shift=0`, as a fraction
/// `NUM / DEN` (`build/main.rs`'s board table): QEMU charges 1 ns per instruction
/// and clocks SysTick at the core clock, 25 MHz on MPS2 (40 instructions per
/// tick), 16 MHz on the micro:bit (62.5). [`crate::calibrate`] checks it
/// against a counted loop at every start.
pub const INSNS_PER_TICK_NUM: u64 = parse_decimal(env!("FIRMWARE_INSNS_PER_TICK_NUM"));
/// Denominator of the instructions per tick; see [`INSNS_PER_TICK_NUM`].
pub const INSNS_PER_TICK_DEN: u64 = parse_decimal(env!("FIRMWARE_INSNS_PER_TICK_DEN"));

/// Instructions in `ticks` SysTick ticks, rounded down.
pub const fn ticks_to_insns(ticks: u64) -> u64 {
    ticks * INSNS_PER_TICK_NUM / INSNS_PER_TICK_DEN
}

/// Parses a positive decimal integer at compile time; anything else stops the build.
const fn parse_decimal(text: &str) -> u64 {
    let digits = text.as_bytes();
    assert!(
        !digits.is_empty(),
        "an instructions-per-tick value is empty"
    );
    let mut value: u64 = 0;
    let mut index = 0;
    while index < digits.len() {
        let digit = digits[index];
        assert!(
            digit.is_ascii_digit(),
            "instructions per tick must be decimal integers"
        );
        value = value * 10 + (digit - b'0') as u64;
        index += 1;
    }
    assert!(value > 0, "instructions per tick must be positive");
    value
}

/// SysTick wraps seen so far; written only by the [`SysTick`] handler.
static WRAPS: AtomicU32 = AtomicU32::new(0);

/// A running SysTick, counting up in ticks from when it was started.
pub struct TickCounter {
    _syst: SYST,
}

impl TickCounter {
    /// Starts SysTick from the processor clock with its wrap exception on.
    pub fn start(mut syst: SYST) -> Self {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        // The cleared counter reads 0 until the next tick loads RELOAD (a
        // load, not a wrap: no exception). Reading 0 as "RELOAD ticks in"
        // would make the first interval negative, so wait for the load.
        while SYST::get_current() == 0 {}
        Self { _syst: syst }
    }

    /// Ticks since [`TickCounter::start`].
    pub fn now(&self) -> u64 {
        ticks()
    }
}

/// Ticks since the counter started: [`TickCounter::now`] for code that cannot hold the
/// counter (a probe, which the engine calls with no arguments); meaningless before a
/// [`TickCounter`] has started.
pub fn ticks() -> u64 {
    cortex_m::interrupt::free(|_| {
        let mut wraps = WRAPS.load(Ordering::Relaxed);
        let mut current = SYST::get_current();
        if SCB::is_pendst_pending() {
            // The counter wrapped but the handler has not run yet (it is
            // masked here): count that wrap, and re-read the counter,
            // which is now certainly past it.
            wraps = wraps.wrapping_add(1);
            current = SYST::get_current();
        }
        u64::from(wraps) * (u64::from(RELOAD) + 1) + u64::from(RELOAD - current)
    })
}

#[exception]
fn SysTick() {
    // Load + store instead of `fetch_add`: thumbv6m has no atomic RMW, and
    // this handler is the only writer.
    WRAPS.store(
        WRAPS.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}
