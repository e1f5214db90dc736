//! kefu counter-terminal firmware for QEMU's `mps2-an386` board (Cortex-M4, LAN9118 Ethernet).
//!
//! What the board adds to the target-agnostic app: a SysTick time driver
//! ([`time_driver`]), an `embassy-net-driver` for the LAN9118 ([`lan9118`]), DHCP, a link
//! watcher, the serial port as the agent's keyboard ([`uart`], [`terminal::Keyboard`]), the
//! semihosting console as the screen ([`terminal::Screen`]), marks kept across a reset
//! ([`terminal::RetainedStorage`]), a peak-stack measurement ([`stack`]), semihosting exit codes,
//! and `main`, which runs [`kefu_firmware::run`] — after a bulk self-test of the network path
//! ([`bulk`]) when one is configured.
//!
//! Output lines are `[uptime] kefu-board: ...`. The app runs until the agent types `/halt`;
//! the firmware then prints its peak stack and exits with code 0 (1 after a panic or a fault).
//! `run-demo.sh` checks all of it.
#![no_std]
#![no_main]

mod bulk;
mod lan9118;
mod stack;
mod terminal;
mod time_driver;
mod uart;

use cortex_m::peripheral::NVIC;
use cortex_m_semihosting::debug;
use embassy_executor::Spawner;
use embassy_net::{IpEndpoint, Ipv4Address, Stack, StackResources};
use embassy_time::{Duration, with_timeout};
use kefu_firmware::Resources;
use static_cell::{ConstStaticCell, StaticCell};

use lan9118::Lan9118;

// The defmt global logger (semihosting stdout) for the app's and kefu-core's defmt output.
#[cfg(feature = "defmt")]
use defmt_semihosting as _;

/// Settings baked in at build time by `build.rs` (token, port, device id).
mod config {
    include!(concat!(env!("OUT_DIR"), "/config.rs"));
}

/// The host as QEMU's user-mode network shows it to a `guestfwd` rule (10.0.2.100).
const GATEWAY_ADDR: Ipv4Address = Ipv4Address::new(10, 0, 2, 100);
/// How long DHCP may take before the board gives up.
const DHCP_TIMEOUT: Duration = Duration::from_secs(20);
/// Sockets the stack can hold: DHCP plus the app's TCP connection (and the bulk self-test's).
const SOCKETS: usize = 3;

/// Prints one line on the host through semihosting, prefixed with the uptime in seconds: on
/// stdout, or on stderr with the `defmt` feature (stdout then carries defmt frames).
#[macro_export]
macro_rules! log {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        let ms = embassy_time::Instant::now().as_millis();
        #[cfg(not(feature = "defmt"))]
        cortex_m_semihosting::hprintln!(
            concat!("[{:>4}.{:03}] ", $fmt),
            ms / 1000,
            ms % 1000
            $(, $arg)*
        );
        #[cfg(feature = "defmt")]
        cortex_m_semihosting::heprintln!(
            concat!("[{:>4}.{:03}] ", $fmt),
            ms / 1000,
            ms % 1000
            $(, $arg)*
        );
    }};
}

/// Ends the emulation with a success (`true`) or failure exit code.
fn exit(ok: bool) -> ! {
    debug::exit(if ok {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host (real hardware): park.
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    log!("kefu-board: panic: {}", info);
    exit(false)
}

/// Every interrupt without a handler of its own lands here; the Ethernet line is routed to the
/// driver, anything else is a fault.
#[cortex_m_rt::exception]
unsafe fn DefaultHandler(irqn: i16) {
    if irqn == lan9118::IRQ as i16 {
        lan9118::on_interrupt();
    } else if irqn == uart::RX_IRQ as i16 {
        uart::on_rx_interrupt();
    } else {
        panic!("unexpected exception or interrupt {}", irqn);
    }
}

#[cortex_m_rt::exception]
unsafe fn HardFault(frame: &cortex_m_rt::ExceptionFrame) -> ! {
    log!("kefu-board: hard fault at pc {:#010x}", frame.pc());
    exit(false)
}

/// Runs the network stack: feeds the driver's frames to smoltcp and back.
#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// Reports the Ethernet link (from the PHY, through the driver's link interrupt) as it changes.
#[embassy_executor::task]
async fn link_task(stack: Stack<'static>) -> ! {
    loop {
        stack.wait_link_up().await;
        log!("kefu-board: link up");
        stack.wait_link_down().await;
        log!("kefu-board: link down");
    }
}

/// Reads lines typed on the serial port (UART0), echoes them on the console and hands them to
/// the app's keyboard ([`terminal::LINES`]).
#[embassy_executor::task]
async fn uart_task(mut uart: uart::Uart) -> ! {
    let mut line = heapless::String::<{ terminal::LINE }>::new();
    loop {
        match uart.read_line(&mut line).await {
            Ok(()) if line.is_empty() => {} // the `\n` of a `\r\n`, or a bare Enter
            Ok(()) => {
                log!("kefu-board: uart line: {}", line.as_str());
                terminal::LINES.send(line.clone()).await;
            }
            Err(uart::LineError::TooLong) => log!("kefu-board: uart line refused: too long"),
            Err(uart::LineError::NotUtf8) => log!("kefu-board: uart line refused: not UTF-8"),
        }
    }
}

/// The app's buffers and engine slot (about 19 KB), initialised at compile time: all zeros,
/// so they cost `.bss` only and are never built on the stack.
static APP: ConstStaticCell<Resources> = ConstStaticCell::new(Resources::new());

/// The agent's seat at the service desk, until the agent types `/halt`; then the peak stack is
/// printed and the emulation ends with code 0. A task of its own, so that `main`'s large
/// set-up frame is not on the stack under the app.
#[embassy_executor::task]
async fn app_task(stack: Stack<'static>, cfg: kefu_firmware::Config<'static>) -> ! {
    let (mut screen, mut keys, mut marks) = (
        terminal::Screen,
        terminal::Keyboard::new(),
        terminal::RetainedStorage,
    );
    kefu_firmware::run(stack, &cfg, APP.take(), &mut screen, &mut keys, &mut marks).await;
    let (peak, size) = stack::peak();
    log!(
        "kefu-board: halted; stack peak {} of {} bytes; lan9118 interrupts {}",
        peak,
        size,
        lan9118::interrupts()
    );
    exit(true)
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    stack::paint();
    log!("kefu-board: mps2-an386 up");
    #[cfg(feature = "defmt")]
    defmt::println!("kefu-board: defmt logging on semihosting stdout");
    let cp = cortex_m::Peripherals::take().expect("core peripherals taken once");
    time_driver::init(cp.SYST);

    // SAFETY: 0x4020_0000 is the board's LAN9118 and only this driver touches it.
    let eth = match unsafe { Lan9118::new(lan9118::BASE) } {
        Ok(eth) => eth,
        Err(e) => {
            log!("kefu-board: ethernet: {}", e);
            exit(false)
        }
    };
    let mac = eth.mac_address();
    log!(
        "kefu-board: lan9118 id {:#010x} mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        eth.id_rev(),
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    // The line was high while the controller's IRQ_CFG still had its reset polarity: drop
    // that stale pending state before unmasking.
    NVIC::unpend(lan9118::Irq);
    // SAFETY: the handler (DefaultHandler -> lan9118::on_interrupt) only touches the driver's
    // atomics and interrupt registers, inside a critical section.
    unsafe { NVIC::unmask(lan9118::Irq) };

    // No entropy source on this board: the seed comes from the MAC (unique per device) and
    // the cycle counter at this point of the boot; it feeds TCP sequence numbers and DHCP
    // transaction ids.
    let mac_bits = u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0x6b, 0x66]);
    let seed = mac_bits ^ time_driver::cycles();
    static RESOURCES: StaticCell<StackResources<SOCKETS>> = StaticCell::new();
    let (stack, runner) = embassy_net::new(
        eth,
        embassy_net::Config::dhcpv4(Default::default()),
        RESOURCES.init(StackResources::new()),
        seed,
    );
    spawner.spawn(net_task(runner).expect("net task spawned once"));
    spawner.spawn(link_task(stack).expect("link task spawned once"));

    // SAFETY: UART0 is used only through this `Uart`.
    let uart = unsafe { uart::Uart::new(time_driver::CORE_HZ, 115_200) };
    NVIC::unpend(uart::RxIrq);
    // SAFETY: the handler (DefaultHandler -> uart::on_rx_interrupt) touches only UART0's
    // control and interrupt-clear registers, inside a critical section, and an AtomicWaker.
    unsafe { NVIC::unmask(uart::RxIrq) };
    spawner.spawn(uart_task(uart).expect("uart task spawned once"));

    if with_timeout(DHCP_TIMEOUT, stack.wait_config_up())
        .await
        .is_err()
    {
        log!(
            "kefu-board: no DHCP lease within {} s",
            DHCP_TIMEOUT.as_secs()
        );
        exit(false)
    }
    if let Some(cfg) = stack.config_v4() {
        log!("kefu-board: dhcp address {}", cfg.address);
    }

    if config::BULK_BYTES != 0 && !bulk_check(stack).await {
        exit(false)
    }

    // The app. Its seed (message ids, reconnect jitter) mixes the MAC with the cycle count
    // after DHCP, whose network timing makes it differ from boot to boot.
    let gateway = IpEndpoint::new(GATEWAY_ADDR.into(), config::GATEWAY_PORT);
    let mut cfg = kefu_firmware::Config::new(gateway, config::DEVICE);
    cfg.platform = "mps2-an386";
    cfg.token = (!config::TOKEN.is_empty()).then_some(config::TOKEN);
    cfg.seed = mac_bits ^ time_driver::cycles();
    spawner.spawn(app_task(stack, cfg).expect("app task spawned once"));
}

/// Bulk self-test (`KEFU_BULK_BYTES`): receive from 10.0.2.100:`BULK_PORT`, send to
/// 10.0.2.100:`BULK_PORT + 1`, each `BULK_BYTES` long.
async fn bulk_check(stack: Stack<'static>) -> bool {
    let n = config::BULK_BYTES;
    let rate = |d: Duration| n as u64 * 1000 / d.as_millis().max(1) / 1024;
    match bulk::receive(stack, (GATEWAY_ADDR, config::BULK_PORT), n).await {
        Ok(d) => log!(
            "kefu-board: bulk rx {} bytes ok in {} ms ({} KiB/s)",
            n,
            d.as_millis(),
            rate(d)
        ),
        Err(e) => {
            log!("kefu-board: bulk rx failed: {}", e);
            return false;
        }
    }
    match bulk::send(stack, (GATEWAY_ADDR, config::BULK_PORT + 1), n).await {
        Ok(d) => log!(
            "kefu-board: bulk tx {} bytes sent in {} ms ({} KiB/s)",
            n,
            d.as_millis(),
            rate(d)
        ),
        Err(e) => {
            log!("kefu-board: bulk tx failed: {}", e);
            return false;
        }
    }
    true
}
