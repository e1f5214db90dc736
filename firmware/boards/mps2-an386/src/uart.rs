//! The board's serial port (CMSDK APB UART0 at 0x4000_4000, RX interrupt on NVIC line 0) as an
//! async line source: the counter terminal's keyboard in the emulator, where QEMU's `-serial`
//! chardev feeds it (run-demo.sh uses a unix socket).
//!
//! The UART holds one received byte (`STATE.RXFULL`); its RX interrupt wakes the reader, which
//! re-arms the interrupt each time it finds nothing to read. Output goes through semihosting,
//! not here: a QEMU serial socket with no client would stall a blocking transmitter.

use core::future::poll_fn;
use core::ptr::{read_volatile, write_volatile};
use core::task::Poll;

use cortex_m::interrupt::InterruptNumber;
use embassy_sync::waitqueue::AtomicWaker;

/// Base address of UART0 on mps2-an386.
pub const BASE: usize = 0x4000_4000;
/// NVIC line of UART0's receive interrupt.
pub const RX_IRQ: u16 = 0;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTCLEAR: usize = 0x0C;
const BAUDDIV: usize = 0x10;

const STATE_RXFULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_RX_INTEN: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// UART0's receive interrupt line.
#[derive(Clone, Copy, Debug)]
pub struct RxIrq;

// SAFETY: line 0 is UART0 RX on mps2-an385/an386, a valid external interrupt number.
unsafe impl InterruptNumber for RxIrq {
    fn number(self) -> u16 {
        RX_IRQ
    }
}

/// Why a line could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LineError {
    /// The line did not fit the buffer; the rest of it up to the newline was skipped.
    TooLong,
    /// The line is not UTF-8.
    NotUtf8,
}

fn read(off: usize) -> u32 {
    // SAFETY: UART0's register block; 32-bit volatile access is how the CMSDK UART is used.
    unsafe { read_volatile((BASE + off) as *const u32) }
}

fn write(off: usize, val: u32) {
    // SAFETY: as in `read`.
    unsafe { write_volatile((BASE + off) as *mut u32, val) }
}

/// Interrupt handler body for [`RX_IRQ`]: masks the RX interrupt and wakes the reader.
pub fn on_rx_interrupt() {
    critical_section::with(|_| {
        write(CTRL, read(CTRL) & !CTRL_RX_INTEN);
        write(INTCLEAR, INT_RX);
    });
    RX_WAKER.wake();
}

/// UART0, owned.
pub struct Uart {
    _private: (),
}

impl Uart {
    /// Enables UART0 at `baud` (receive; transmit enabled but unused). The NVIC line is left to the caller.
    ///
    /// # Safety
    /// Only one `Uart` may exist: it owns UART0's registers.
    pub unsafe fn new(core_hz: u32, baud: u32) -> Self {
        write(BAUDDIV, (core_hz / baud).max(16));
        write(INTCLEAR, u32::MAX);
        write(CTRL, CTRL_TX_EN | CTRL_RX_EN);
        Self { _private: () }
    }

    /// Waits for the next received byte.
    pub async fn read_byte(&mut self) -> u8 {
        poll_fn(|cx| {
            RX_WAKER.register(cx.waker());
            for _ in 0..2 {
                if read(STATE) & STATE_RXFULL != 0 {
                    return Poll::Ready((read(DATA) & 0xFF) as u8);
                }
                // Arm the interrupt, then look once more: a byte may have come in between.
                critical_section::with(|_| write(CTRL, read(CTRL) | CTRL_RX_INTEN));
            }
            Poll::Pending
        })
        .await
    }

    /// Reads one line (up to `\n` or `\r`, so a raw terminal's Enter ends it too; `\r\n` then
    /// also yields an empty line) into `buf`, replacing its contents.
    pub async fn read_line<const N: usize>(
        &mut self,
        buf: &mut heapless::String<N>,
    ) -> Result<(), LineError> {
        let mut bytes = heapless::Vec::<u8, N>::new();
        let mut overflow = false;
        loop {
            match self.read_byte().await {
                b'\n' | b'\r' => break,
                b => overflow |= bytes.push(b).is_err(),
            }
        }
        buf.clear();
        if overflow {
            return Err(LineError::TooLong);
        }
        let text = core::str::from_utf8(&bytes).map_err(|_| LineError::NotUtf8)?;
        buf.push_str(text).map_err(|_| LineError::TooLong)
    }
}
