//! embassy-time driver on the Cortex-M SysTick: one interrupt per millisecond (1 kHz tick).
//!
//! SysTick counts the core clock down from `CORE_HZ / 1000`; each wrap raises the `SysTick`
//! exception, which advances a 64-bit tick counter and, once the earliest deadline of the timer
//! queue has passed, wakes the expired timers. The counter and the queue live behind a
//! `critical_section::Mutex`, so `now()` and `schedule_wake()` are safe from any context.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

/// Core clock of QEMU's mps2-an386 (the FPGA image's 25 MHz).
pub const CORE_HZ: u32 = 25_000_000;

/// The SysTick time driver (one static instance, installed with `time_driver_impl!`).
pub struct SysTickDriver {
    /// Ticks (milliseconds) since [`init`].
    ticks: Mutex<Cell<u64>>,
    /// The tick at which the queue next needs attention (`u64::MAX`: nothing scheduled).
    alarm: Mutex<Cell<u64>>,
    /// Timers waiting for their deadline.
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

// The tick rate is chosen by the `tick-hz-1_000` feature of embassy-time in Cargo.toml.
const _: () = assert!(embassy_time_driver::TICK_HZ == 1_000);

/// Starts SysTick at 1 kHz with its interrupt enabled. Call once, before the executor runs.
pub fn init(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CORE_HZ / embassy_time_driver::TICK_HZ as u32 - 1);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
    // `syst` is consumed: nothing else can reconfigure SysTick, which keeps running.
}

impl SysTickDriver {
    /// One tick passed: count it and run the queue if a deadline is due.
    fn on_tick(&self) {
        critical_section::with(|cs| {
            let now = self.ticks.borrow(cs).get() + 1;
            self.ticks.borrow(cs).set(now);
            if now >= self.alarm.borrow(cs).get() {
                let next = self.queue.borrow(cs).borrow_mut().next_expiration(now);
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                let now = self.ticks.borrow(cs).get();
                let next = queue.next_expiration(now);
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

#[exception]
fn SysTick() {
    DRIVER.on_tick();
}
