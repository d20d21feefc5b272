//! Peak stack use by painting: fill the unused stack with a pattern, run the
//! workload, then find the lowest word that no longer holds the pattern.
//!
//! The stack spans cortex-m-rt's linker symbols `_stack_end` (lowest address,
//! just past .bss/.uninit) to `_stack_start` (the initial SP, top of RAM).
//! [`peak_bytes`] measures from `_stack_start`, so it includes everything that
//! was on the stack before painting (e.g. buffers in `main`'s frame);
//! [`depth_of`] measures one call from the caller's SP.

use core::ptr;

/// The paint. Not a plausible pointer, float or small integer, so a live value
/// equal to it (which would hide the word's use) is unlikely.
const PATTERN: u32 = 0xA5C3_5A3C;

/// Bytes left unpainted below [`paint`]'s SP: room for an exception taken
/// while it paints (a SysTick wrap stacks up to 104 bytes of context with the
/// FPU's registers, plus the handler's own small frame).
const MARGIN: usize = 256;

extern "C" {
    /// Top of the stack (the initial SP), from cortex-m-rt's `link.x`.
    static _stack_start: u32;
    /// Lowest address the stack may use, from cortex-m-rt's `link.x`.
    static _stack_end: u32;
    /// Start of RAM, from cortex-m-rt's `link.x`.
    static _ram_start: u32;
}

/// Bytes of RAM taken by statics (`.data`, `.bss`, `.uninit`): from the start
/// of RAM to where the stack may end.
pub fn static_bytes() -> usize {
    bottom() - ptr::addr_of!(_ram_start) as usize
}

fn top() -> usize {
    // Only the symbol's address is used, never its (nonexistent) value.
    ptr::addr_of!(_stack_start) as usize
}

fn bottom() -> usize {
    ptr::addr_of!(_stack_end) as usize
}

/// Paints the stack from `_stack_end` up to a little below the current SP.
#[inline(never)]
pub fn paint() {
    let limit = (cortex_m::register::msp::read() as usize - MARGIN) & !3;
    let mut word = bottom() as *mut u32;
    while (word as usize) < limit {
        // SAFETY: `word` is 4-aligned and in [_stack_end, SP - MARGIN): RAM
        // that belongs to the stack (statics end at `_stack_end`) and lies
        // below every live frame, including this function's and any exception
        // frame stacked meanwhile (within MARGIN of the SP).
        unsafe { word.write_volatile(PATTERN) };
        word = word.wrapping_add(1);
    }
}

/// Bytes between the stack top and the lowest word overwritten since
/// [`paint`]; at least the stack in use when it painted.
pub fn peak_bytes() -> usize {
    let top = top();
    let mut word = bottom() as *const u32;
    while (word as usize) < top {
        // SAFETY: `word` is 4-aligned and within the stack's RAM; a volatile
        // read of RAM that other code may be using is harmless.
        if unsafe { word.read_volatile() } != PATTERN {
            break;
        }
        word = word.wrapping_add(1);
    }
    top - word as usize
}

/// Runs `f` and returns its result and the bytes of stack it used below the
/// SP of this call, including its own frame and return address.
///
/// `f` must not be inlined into this function (pass a function marked
/// `#[inline(never)]`), or its frame would sit above the painted area.
/// Interrupts are masked meanwhile, so no exception frame is counted.
#[inline(never)]
pub fn depth_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    cortex_m::interrupt::free(|_| {
        let sp = cortex_m::register::msp::read() as usize & !3;
        let mut word = bottom() as *mut u32;
        while (word as usize) < sp {
            // SAFETY: `word` is 4-aligned and in [_stack_end, SP): stack RAM
            // below every live frame (this loop calls nothing and interrupts
            // are masked, so nothing below the SP is in use).
            unsafe { word.write_volatile(PATTERN) };
            word = word.wrapping_add(1);
        }
        let result = f();
        let mut word = bottom() as *const u32;
        while (word as usize) < sp {
            // SAFETY: `word` is 4-aligned and within the stack's RAM.
            if unsafe { word.read_volatile() } != PATTERN {
                break;
            }
            word = word.wrapping_add(1);
        }
        (result, sp - word as usize)
    })
}
