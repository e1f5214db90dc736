//! Peak stack measurement: the free stack is painted with a pattern at boot, and the deepest
//! word no longer holding it marks the peak. The stack is cortex-m-rt's: from `_stack_start`
//! (the top of RAM) down to `_stack_end` (just above `.bss` and `.uninit`), with no guard — so
//! the measurement also tells how close the app came to overwriting its static data.

use core::ptr::{addr_of, read_volatile, write_volatile};

/// The paint.
const PAINT: u32 = 0x6b65_6675; // "kefu"
/// Words below the current stack pointer left unpainted (the painting function's own frame).
const MARGIN: usize = 64;

unsafe extern "C" {
    static _stack_start: u32;
    static _stack_end: u32;
}

fn bounds() -> (usize, usize) {
    // Linker symbols: only their addresses are used.
    (
        addr_of!(_stack_end) as usize,
        addr_of!(_stack_start) as usize,
    )
}

/// Paints the free stack below the current stack pointer. Call once, first thing in `main`.
#[inline(never)]
pub fn paint() {
    let (bottom, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut at = bottom;
    while at + 4 * MARGIN < sp {
        // SAFETY: [_stack_end, sp - margin) is stack memory nothing uses yet: below the
        // current frame, above every static.
        unsafe { write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// The deepest the stack has been since [`paint`], in bytes, and its size.
pub fn peak() -> (usize, usize) {
    let (bottom, top) = bounds();
    let mut at = bottom;
    // SAFETY: reads words of the stack region below the live frames.
    while at < top && unsafe { read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    (top - at, top - bottom)
}
