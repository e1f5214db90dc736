//! A size probe for kefu-firmware: the whole app as a board would run it (embassy executor,
//! embassy-net with DHCP, a SysTick time driver at 1 kHz, a text console on a UART register),
//! with a null Ethernet driver in place of a real one. Built to read `arm-none-eabi-size`; it
//! links against the terminal's budget (96 KiB flash, 48 KiB RAM) so an app that outgrows it
//! fails to link.
#![no_std]
#![no_main]

use core::cell::{Cell, RefCell};
use core::fmt::Write as _;
use core::task::{Context, Waker};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;
use critical_section::Mutex;
use embassy_executor::Spawner;
use embassy_net::{IpEndpoint, Ipv4Address, StackResources};
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;
use kefu_firmware::{Config, Display, Entry, Input, NoStorage, Resources, Shown, Status};
use static_cell::StaticCell;

// ----- time: SysTick at 1 kHz ---------------------------------------------------------------

struct SysTickDriver {
    ticks: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

impl Driver for SysTickDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }
    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut q = self.queue.borrow(cs).borrow_mut();
            q.schedule_wake(at, waker);
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: SysTickDriver = SysTickDriver {
    ticks: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

#[exception]
fn SysTick() {
    critical_section::with(|cs| {
        let t = DRIVER.ticks.borrow(cs).get() + 1;
        DRIVER.ticks.borrow(cs).set(t);
        DRIVER.queue.borrow(cs).borrow_mut().next_expiration(t);
    });
}

// ----- network: a driver that never receives and drops what it sends ------------------------

struct NullEth;
struct NullRx;
struct NullTx;

impl embassy_net_driver::RxToken for NullRx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(&mut [])
    }
}

impl embassy_net_driver::TxToken for NullTx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = [0u8; 1514];
        let n = len.min(buf.len());
        let r = f(&mut buf[..n]);
        // A real driver writes the frame to the controller here.
        unsafe { core::ptr::write_volatile(0x4020_0020 as *mut u8, buf[0]) };
        r
    }
}

impl embassy_net_driver::Driver for NullEth {
    type RxToken<'a> = NullRx;
    type TxToken<'a> = NullTx;
    fn receive(&mut self, _cx: &mut Context) -> Option<(NullRx, NullTx)> {
        None
    }
    fn transmit(&mut self, _cx: &mut Context) -> Option<NullTx> {
        Some(NullTx)
    }
    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.max_transmission_unit = 1514;
        c
    }
    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet([0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
    }
}

// ----- the board's display (a UART console), keypad and storage ------------------------------

struct Uart;

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            // mps2 UART0 data register.
            unsafe { core::ptr::write_volatile(0x4000_4000 as *mut u32, u32::from(b)) };
        }
        Ok(())
    }
}

struct Console;

impl Display for Console {
    fn message(&mut self, m: &Shown<'_>) {
        let _ = writeln!(Uart, "{m}");
    }
    fn status(&mut self, s: &Status<'_>) {
        let _ = writeln!(Uart, "status: {s}");
    }
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        let _ = writeln!(Uart, "{line}");
    }
}

struct NoKeys;

impl Input for NoKeys {
    async fn next(&mut self) -> Entry<'_> {
        core::future::pending().await
    }
}

#[cfg(feature = "defmt")]
mod null_logger {
    #[defmt::global_logger]
    struct Null;
    unsafe impl defmt::Logger for Null {
        fn acquire() {}
        unsafe fn flush() {}
        unsafe fn release() {}
        unsafe fn write(bytes: &[u8]) {
            for b in bytes {
                unsafe { core::ptr::write_volatile(0x4000_4000 as *mut u32, u32::from(*b)) };
            }
        }
    }
    #[defmt::panic_handler]
    fn panic() -> ! {
        loop {}
    }
    defmt::timestamp!("{=u64}", 0);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

// ----- main ------------------------------------------------------------------------------

static NET: StaticCell<StackResources<3>> = StaticCell::new();
static APP: StaticCell<Resources> = StaticCell::new();

/// Out of line: the app's resources may be built on this short-lived frame (about 18.7 KB)
/// before moving into their static cell, instead of in the main task's frame, which stays live
/// for as long as the app runs.
#[inline(never)]
fn app_resources() -> &'static mut Resources {
    APP.init_with(Resources::new)
}

#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, NullEth>) -> ! {
    runner.run().await
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let mut p = cortex_m::Peripherals::take().unwrap();
    p.SYST.set_clock_source(SystClkSource::Core);
    p.SYST.set_reload(25_000 - 1);
    p.SYST.clear_current();
    p.SYST.enable_interrupt();
    p.SYST.enable_counter();

    let cfg = embassy_net::Config::dhcpv4(Default::default());
    let (stack, runner) = embassy_net::new(NullEth, cfg, NET.init(StackResources::new()), 0x5eed);
    spawner.spawn(net_task(runner).unwrap());

    let gateway = IpEndpoint::new(Ipv4Address::new(10, 0, 2, 100).into(), 6061);
    let mut app = Config::new(gateway, "probe");
    app.topics = &["grpprobe"];
    app.token = Some(b"not-a-real-token");
    let res = app_resources();
    kefu_firmware::run(stack, &app, res, &mut Console, &mut NoKeys, &mut NoStorage).await;
    loop {
        cortex_m::asm::wfi();
    }
}
