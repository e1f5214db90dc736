//! embassy-time driver on the Cortex-M SysTick: one interrupt per millisecond (1 kHz tick).
//!
//! SysTick counts the core clock down from `CORE_HZ / 1000`; each wrap raises the `SysTick`
//! exception, which wakes the expired timers once the earliest deadline of the timer queue has
//! passed. The queue lives behind a `critical_section::Mutex`, so `now()` and `schedule_wake()`
//! are safe from any context.
//!
//! The time itself is not the number of SysTick interrupts: QEMU delivers its SysTick late, and
//! drops wraps, when the host is busy (measured here: guest time running at half speed under a
//! load of 8 on 2 cores). `now()` therefore reads the board's free-running 25 MHz counter (the
//! MPS2 FPGA's `COUNTER` register, which both the FPGA and QEMU keep exact), extended to 64 bits
//! — each SysTick and each `now()` call extends it, far more often than its 171 s wrap. SysTick
//! only paces the wake-ups: a lost interrupt delays a timer by a millisecond, it never makes the
//! clock slow.

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
/// The MPS2 FPGA's free-running counter (FPGAIO `COUNTER`), counting at [`CORE_HZ`].
const FPGA_COUNTER: usize = 0x4002_8018;
/// Counter cycles per embassy tick.
const CYCLES_PER_TICK: u64 = CORE_HZ as u64 / embassy_time_driver::TICK_HZ;

/// The SysTick time driver (one static instance, installed with `time_driver_impl!`).
pub struct SysTickDriver {
    /// The 64-bit extension of the FPGA counter: (last raw value read, cycles before it wrapped).
    clock: Mutex<Cell<(u32, u64)>>,
    /// The tick at which the queue next needs attention (`u64::MAX`: nothing scheduled).
    alarm: Mutex<Cell<u64>>,
    /// Timers waiting for their deadline.
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    clock: Mutex::new(Cell::new((0, 0))),
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

/// Core clock cycles since boot (the extended FPGA counter): a fine-grained, free-running value,
/// also the board's only source of jitter for seeding random number generators.
pub fn cycles() -> u64 {
    critical_section::with(|cs| DRIVER.cycles(cs))
}

impl SysTickDriver {
    /// Cycles since boot, from the FPGA counter; extends it past its 32-bit wrap.
    fn cycles(&self, cs: critical_section::CriticalSection<'_>) -> u64 {
        // SAFETY: FPGAIO COUNTER is a read-only 32-bit register of the MPS2 board; reading it
        // has no side effect.
        let raw = unsafe { core::ptr::read_volatile(FPGA_COUNTER as *const u32) };
        let clock = self.clock.borrow(cs);
        let (last, mut wrapped) = clock.get();
        if raw < last {
            wrapped += 1 << 32;
        }
        clock.set((raw, wrapped));
        wrapped + u64::from(raw)
    }

    /// Ticks (milliseconds) since boot.
    fn ticks(&self, cs: critical_section::CriticalSection<'_>) -> u64 {
        self.cycles(cs) / CYCLES_PER_TICK
    }

    /// A SysTick interrupt: run the queue if a deadline is due.
    fn on_tick(&self) {
        critical_section::with(|cs| {
            let now = self.ticks(cs);
            if now >= self.alarm.borrow(cs).get() {
                let next = self.queue.borrow(cs).borrow_mut().next_expiration(now);
                self.alarm.borrow(cs).set(next);
            }
        });
    }
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow(cs).borrow_mut();
            if queue.schedule_wake(at, waker) {
                let now = self.ticks(cs);
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
