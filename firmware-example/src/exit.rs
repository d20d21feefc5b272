//! How the program ends: a semihosting exit code, so that QEMU exits with it.
//! Panics, HardFaults and unexpected exceptions all end in failure, so a run
//! never hangs.

use core::panic::PanicInfo;

use cortex_m_rt::{exception, ExceptionFrame};
use cortex_m_semihosting::debug::{self, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::hprintln;

/// Ends the run successfully (QEMU exits with 0).
pub fn success() -> ! {
    debug::exit(EXIT_SUCCESS);
    park()
}

/// Ends the run with a failure (QEMU exits non-zero).
pub fn failure() -> ! {
    debug::exit(EXIT_FAILURE);
    park()
}

/// Only reached without a semihosting host; the runner's timeout ends it.
fn park() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    failure()
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    hprintln!("hardfault: {:?}", frame);
    failure()
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) {
    hprintln!("unexpected exception or interrupt: {}", irqn);
    failure()
}
