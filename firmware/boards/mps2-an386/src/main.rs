//! kefu counter-terminal firmware for QEMU's `mps2-an386` board (Cortex-M4, LAN9118 Ethernet).
//!
//! What the board adds to the target-agnostic app: a SysTick time driver
//! ([`time_driver`]), an `embassy-net-driver` for the LAN9118 ([`lan9118`]), DHCP, a link
//! watcher, the serial port as a line source ([`uart`]), semihosting output and exit codes, and
//! `main`. Until the `kefu-firmware` app lands, `main` runs the board's own probe ([`hello`]):
//! TCP to the gateway, `hi`, `login`, in as many rounds as configured; and, when configured,
//! a bulk self-test ([`bulk`]) first. The app's spawn point is marked in `main`.
//!
//! Output lines are `[uptime] kefu-board: ...`; the exit code (via semihosting) is 0 when the
//! probe succeeded, 1 otherwise. `run-demo.sh` checks both.
#![no_std]
#![no_main]

mod bulk;
mod hello;
mod lan9118;
mod time_driver;
mod uart;

use cortex_m::peripheral::NVIC;
use cortex_m_semihosting::debug;
use embassy_executor::Spawner;
use embassy_net::{Ipv4Address, Stack, StackResources};
use embassy_time::{Duration, Instant, Timer, with_timeout};
use static_cell::StaticCell;

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
/// How long one probe round keeps retrying a gateway that is away.
const RETRY_WINDOW: Duration = Duration::from_secs(30);
/// Sockets the stack can hold: DHCP plus the app's TCP connections.
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

/// Reads lines typed on the serial port (UART0) and reports them: the agent's input source once
/// the app lands, a check of the UART path until then.
#[embassy_executor::task]
async fn uart_task(mut uart: uart::Uart) -> ! {
    let mut line = heapless::String::<128>::new();
    loop {
        match uart.read_line(&mut line).await {
            Ok(()) => log!("kefu-board: uart line: {}", line.as_str()),
            Err(e) => log!("kefu-board: uart line refused: {:?}", e),
        }
    }
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
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

    // === kefu-firmware app: spawn point =========================================================
    // When the `kefu-firmware` crate lands, the lead replaces `probe(stack).await` below with the
    // app's task, e.g.
    //     spawner.spawn(app_task(stack, ...).expect("app task spawned once"));
    // where `app_task` is an `#[embassy_executor::task]` that calls `kefu_firmware::run(stack,
    // (GATEWAY_ADDR, config::GATEWAY_PORT), config::TOKEN, display, input, storage)`.
    // Everything above (time driver, Ethernet, DHCP, `stack`) is what the app needs. Its seed
    // (message ids, reconnect jitter): `mac_bits ^ time_driver::cycles()` taken here, after
    // DHCP, whose network timing makes the cycle count differ from boot to boot. An app that
    // waits for the link and the lease itself (it must, to survive link loss) can instead be
    // spawned right after `link_task`, and the DHCP wait above kept only for the log line.
    // `uart_task` is where the app's input source (the agent's typed replies) plugs in.
    // The bulk self-test is a board check: keep it off (KEFU_BULK_BYTES unset) in fleet builds.
    // ===========================================================================================
    let ok = probe(stack).await;
    exit(ok)
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

/// The board's own check until the app lands: `hi` (and `login` with the baked-in token), in
/// `config::PROBE_ROUNDS` rounds. Every round but the last holds its connection until it ends
/// (the gateway shuts down, the link goes away); the next round retries every second until the
/// gateway answers again.
async fn probe(stack: Stack<'static>) -> bool {
    let endpoint = (GATEWAY_ADDR, config::GATEWAY_PORT);
    let rounds = config::PROBE_ROUNDS;
    for round in 1..=rounds {
        let hold = round < rounds;
        let deadline = Instant::now() + RETRY_WINDOW;
        loop {
            match hello::run(stack, endpoint, config::DEVICE, config::TOKEN, hold).await {
                Ok(h) => {
                    log!(
                        "kefu-board: round {} done (protocol {}, user {})",
                        round,
                        h.version,
                        h.user.as_str()
                    );
                    break;
                }
                Err(e) if e.is_transient() && Instant::now() < deadline => {
                    log!("kefu-board: round {}: {}; retrying in 1 s", round, e);
                    Timer::after_secs(1).await;
                }
                Err(e) => {
                    log!("kefu-board: round {} failed: {}", round, e);
                    return false;
                }
            }
        }
    }
    log!(
        "kefu-board: lan9118 interrupts taken: {}",
        lan9118::interrupts()
    );
    true
}
