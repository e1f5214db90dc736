//! `embassy-net-driver` for the SMSC LAN9118 Ethernet controller (QEMU's `lan9118-mmio`).
//!
//! The controller is driven through 32-bit registers: data and status FIFOs for each
//! direction, a few system CSRs, and the MAC's own CSRs reached indirectly through
//! `MAC_CSR_CMD` / `MAC_CSR_DATA`; the PHY's registers are reached through the MAC's MII
//! registers. QEMU's `hw/net/lan9118.c` is the model this driver is written against.
//!
//! - Receive: the RX status FIFO holds one word per frame (length in bits 29:16, CRC
//!   included); the frame is then read as whole words from the RX data FIFO.
//! - Transmit: TX command A and B, then the frame's words, go into the TX data FIFO; the TX
//!   status FIFO is drained and allowed to overrun (status is not needed).
//! - Interrupts (NVIC line [`IRQ`]): RX status level, TX done and PHY (link) events. The handler
//!   [`on_interrupt`] masks what fired and wakes the stack; the driver re-arms the sources it
//!   waits on each time it finds nothing to do, so there is no busy polling.
//! - Link: the PHY's basic status register, re-read when the PHY raises a link interrupt.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use core::task::Context;

use cortex_m::interrupt::InterruptNumber;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

/// Base address of the controller on mps2-an386.
pub const BASE: usize = 0x4020_0000;

/// The controller's interrupt line on mps2-an386.
#[derive(Clone, Copy, Debug)]
pub struct Irq;

// SAFETY: 13 is the Ethernet interrupt of the mps2-an386 board, a valid external IRQ number.
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        IRQ
    }
}

/// NVIC interrupt number of the Ethernet controller.
pub const IRQ: u16 = 13;

/// Largest frame handled, without CRC (1514 + VLAN tag room).
pub const MTU: usize = 1518;

/// System CSR offsets.
mod reg {
    pub const RX_DATA_FIFO: usize = 0x00;
    pub const TX_DATA_FIFO: usize = 0x20;
    pub const RX_STATUS_FIFO: usize = 0x40;
    pub const TX_STATUS_FIFO: usize = 0x48;
    pub const ID_REV: usize = 0x50;
    pub const IRQ_CFG: usize = 0x54;
    pub const INT_STS: usize = 0x58;
    pub const INT_EN: usize = 0x5C;
    pub const BYTE_TEST: usize = 0x64;
    pub const FIFO_INT: usize = 0x68;
    pub const RX_CFG: usize = 0x6C;
    pub const TX_CFG: usize = 0x70;
    pub const HW_CFG: usize = 0x74;
    pub const RX_FIFO_INF: usize = 0x7C;
    pub const TX_FIFO_INF: usize = 0x80;
    pub const PMT_CTRL: usize = 0x84;
    pub const MAC_CSR_CMD: usize = 0xA4;
    pub const MAC_CSR_DATA: usize = 0xA8;
}

/// MAC CSR indices (indirect).
mod mac {
    pub const MAC_CR: u8 = 1;
    pub const ADDRH: u8 = 2;
    pub const ADDRL: u8 = 3;
    pub const MII_ACC: u8 = 6;
    pub const MII_DATA: u8 = 7;

    pub const CR_RXEN: u32 = 1 << 2;
    pub const CR_TXEN: u32 = 1 << 3;
    pub const CR_FDPX: u32 = 1 << 20;
}

/// PHY register indices and bits (internal PHY at MII address 1).
mod phy {
    pub const ADDR: u32 = 1;
    pub const BSR: u32 = 1;
    pub const ISR: u32 = 29;
    pub const IMR: u32 = 30;
    pub const BSR_LINK: u32 = 1 << 2;
    /// Link down and auto-negotiation complete (link up) events.
    pub const INT_LINK: u32 = (1 << 4) | (1 << 6);
}

/// Interrupt status / enable bits.
mod int {
    /// RX status FIFO level: a frame is waiting.
    pub const RSFL: u32 = 1 << 3;
    /// TX status FIFO level: a frame was sent.
    pub const TSFL: u32 = 1 << 7;
    /// TX data FIFO available: room to send.
    pub const TDFA: u32 = 1 << 9;
    /// PHY event (bit 18, not 26: a driver arming bit 26 never hears of link changes).
    pub const PHY: u32 = 1 << 18;
}

const CSR_BUSY: u32 = 1 << 31;
const CSR_READ: u32 = 1 << 30;
const MII_BUSY: u32 = 1 << 0;
const MII_WRITE: u32 = 1 << 1;
const IRQ_CFG_ON: u32 = (1 << 8) | (1 << 4) | 1; // enabled, push-pull, active high
const TX_CFG_ON: u32 = (1 << 1) | (1 << 2); // TX_ON, status may overrun
const TX_CMD_A_FIRST_LAST: u32 = (1 << 13) | (1 << 12);
const RX_STS_ERROR: u32 = 1 << 15;
const BYTE_TEST_VALUE: u32 = 0x8765_4321;

/// Bounded spin for register handshakes that QEMU completes at once.
const SPIN: u32 = 100_000;

/// Why the controller could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `BYTE_TEST` did not read back `0x87654321`: no LAN9118 at this address, or wrong endianness.
    NotFound(u32),
    /// A soft reset, MAC CSR or MII access did not complete in time.
    Timeout(&'static str),
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::NotFound(v) => write!(f, "no LAN9118: BYTE_TEST reads {v:#010x}"),
            Error::Timeout(what) => write!(f, "LAN9118 {what} timed out"),
        }
    }
}

/// Interrupt sources that fired and have not been looked at yet.
static PENDING: AtomicU32 = AtomicU32::new(0);
/// Interrupts taken since boot (diagnostics).
static IRQ_COUNT: AtomicU32 = AtomicU32::new(0);
/// The network stack's task, woken by the interrupt.
static WAKER: AtomicWaker = AtomicWaker::new();

/// Raw access to the register block.
struct Regs {
    base: usize,
}

impl Regs {
    fn read(&self, off: usize) -> u32 {
        // SAFETY: `base` is the controller's MMIO block (checked by BYTE_TEST), `off` one of its
        // registers; 32-bit volatile reads are how the LAN9118 is accessed.
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    fn write(&self, off: usize, val: u32) {
        // SAFETY: as in `read`.
        unsafe { write_volatile((self.base + off) as *mut u32, val) }
    }

    fn wait_clear(&self, off: usize, mask: u32, what: &'static str) -> Result<(), Error> {
        for _ in 0..SPIN {
            if self.read(off) & mask == 0 {
                return Ok(());
            }
        }
        Err(Error::Timeout(what))
    }

    fn mac_read(&self, idx: u8) -> Result<u32, Error> {
        self.wait_clear(reg::MAC_CSR_CMD, CSR_BUSY, "MAC CSR")?;
        self.write(reg::MAC_CSR_CMD, CSR_BUSY | CSR_READ | u32::from(idx));
        self.wait_clear(reg::MAC_CSR_CMD, CSR_BUSY, "MAC CSR")?;
        Ok(self.read(reg::MAC_CSR_DATA))
    }

    fn mac_write(&self, idx: u8, val: u32) -> Result<(), Error> {
        self.wait_clear(reg::MAC_CSR_CMD, CSR_BUSY, "MAC CSR")?;
        self.write(reg::MAC_CSR_DATA, val);
        self.write(reg::MAC_CSR_CMD, CSR_BUSY | u32::from(idx));
        self.wait_clear(reg::MAC_CSR_CMD, CSR_BUSY, "MAC CSR")
    }

    fn phy_wait(&self) -> Result<(), Error> {
        for _ in 0..SPIN {
            if self.mac_read(mac::MII_ACC)? & MII_BUSY == 0 {
                return Ok(());
            }
        }
        Err(Error::Timeout("MII"))
    }

    fn phy_read(&self, idx: u32) -> Result<u32, Error> {
        self.phy_wait()?;
        self.mac_write(mac::MII_ACC, (phy::ADDR << 11) | (idx << 6) | MII_BUSY)?;
        self.phy_wait()?;
        Ok(self.mac_read(mac::MII_DATA)? & 0xFFFF)
    }

    fn phy_write(&self, idx: u32, val: u32) -> Result<(), Error> {
        self.phy_wait()?;
        self.mac_write(mac::MII_DATA, val & 0xFFFF)?;
        self.mac_write(
            mac::MII_ACC,
            (phy::ADDR << 11) | (idx << 6) | MII_WRITE | MII_BUSY,
        )?;
        self.phy_wait()
    }

    /// Arms interrupt sources (adds to `INT_EN`).
    fn enable(&self, bits: u32) {
        critical_section::with(|_| {
            let en = self.read(reg::INT_EN);
            self.write(reg::INT_EN, en | bits);
        });
    }
}

/// The LAN9118 driver: owns the register block and one frame buffer per direction.
pub struct Lan9118 {
    regs: Regs,
    mac: [u8; 6],
    link_up: bool,
    rx_buf: [u8; MTU + 4],
    tx_buf: [u8; MTU],
}

impl Lan9118 {
    /// Resets the controller at `base`, reads its MAC address, enables the MAC, arms the PHY's
    /// link interrupt and the controller's interrupt output. The NVIC line is left to the
    /// caller (see [`IRQ`]).
    ///
    /// # Safety
    /// `base` must be the address of a LAN9118 register block that nothing else uses.
    pub unsafe fn new(base: usize) -> Result<Self, Error> {
        let regs = Regs { base };
        let test = regs.read(reg::BYTE_TEST);
        if test != BYTE_TEST_VALUE {
            return Err(Error::NotFound(test));
        }
        regs.write(reg::HW_CFG, 1); // SRST
        regs.wait_clear(reg::HW_CFG, 1, "soft reset")?;
        for _ in 0..SPIN {
            if regs.read(reg::PMT_CTRL) & 1 != 0 {
                break;
            }
        }
        if regs.read(reg::PMT_CTRL) & 1 == 0 {
            return Err(Error::Timeout("ready after reset"));
        }
        regs.write(reg::INT_EN, 0);
        regs.write(reg::INT_STS, u32::MAX);
        let lo = regs.mac_read(mac::ADDRL)?.to_le_bytes();
        let hi = regs.mac_read(mac::ADDRH)?.to_le_bytes();
        let mac = [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]];
        regs.write(reg::RX_CFG, 0); // word-aligned end, no start offset
        regs.write(reg::FIFO_INT, 0); // RX status level 0: interrupt on every frame
        regs.write(reg::TX_CFG, TX_CFG_ON);
        let cr = regs.mac_read(mac::MAC_CR)?;
        regs.mac_write(mac::MAC_CR, cr | mac::CR_RXEN | mac::CR_TXEN | mac::CR_FDPX)?;
        let _ = regs.phy_read(phy::ISR)?; // clear stale events
        regs.phy_write(phy::IMR, phy::INT_LINK)?;
        regs.write(reg::IRQ_CFG, IRQ_CFG_ON);
        let link_up = regs.phy_read(phy::BSR)? & phy::BSR_LINK != 0;
        Ok(Self {
            regs,
            mac,
            link_up,
            rx_buf: [0; MTU + 4],
            tx_buf: [0; MTU],
        })
    }

    /// The MAC address the controller filters on.
    pub fn mac_address(&self) -> [u8; 6] {
        self.mac
    }

    /// The chip id and revision (`ID_REV`).
    pub fn id_rev(&self) -> u32 {
        self.regs.read(reg::ID_REV)
    }

    /// Frames waiting in the RX FIFO.
    fn rx_frames(&self) -> u32 {
        (self.regs.read(reg::RX_FIFO_INF) >> 16) & 0xFF
    }

    /// Free bytes in the TX data FIFO.
    fn tx_free(&self) -> usize {
        (self.regs.read(reg::TX_FIFO_INF) & 0xFFFF) as usize
    }

    /// Drains TX status words (the status FIFO may also overrun; they are not needed).
    fn drain_tx_status(&self) {
        while (self.regs.read(reg::TX_FIFO_INF) >> 16) & 0xFF != 0 {
            let _ = self.regs.read(reg::TX_STATUS_FIFO);
        }
    }

    /// Reads the next frame into `rx_buf`; `None` if it was bad (skipped) or too large.
    fn read_frame(&mut self) -> Option<usize> {
        let status = self.regs.read(reg::RX_STATUS_FIFO);
        let len = ((status >> 16) & 0x3FFF) as usize;
        let words = len.div_ceil(4);
        let good = status & RX_STS_ERROR == 0 && (4..=self.rx_buf.len()).contains(&len);
        for i in 0..words {
            let w = self.regs.read(reg::RX_DATA_FIFO).to_le_bytes();
            if good {
                let at = i * 4;
                let n = (len - at).min(4);
                self.rx_buf[at..at + n].copy_from_slice(&w[..n]);
            }
        }
        good.then_some(len - 4) // drop the CRC
    }

    /// Re-reads the PHY link bit after a link interrupt.
    fn refresh_link(&mut self) {
        if PENDING.fetch_and(!int::PHY, Ordering::AcqRel) & int::PHY != 0 {
            let _ = self.regs.phy_read(phy::ISR); // reading clears the PHY's event bits
            if let Ok(bsr) = self.regs.phy_read(phy::BSR) {
                self.link_up = bsr & phy::BSR_LINK != 0;
            }
            self.regs.enable(int::PHY);
        }
    }
}

/// Interrupt handler body: masks the sources that fired, remembers them and wakes the stack.
/// Call from the handler of NVIC line [`IRQ`].
pub fn on_interrupt() {
    let regs = Regs { base: BASE };
    critical_section::with(|_| {
        let fired = regs.read(reg::INT_STS) & regs.read(reg::INT_EN);
        regs.write(reg::INT_EN, regs.read(reg::INT_EN) & !fired);
        regs.write(reg::INT_STS, fired);
        PENDING.fetch_or(fired, Ordering::AcqRel);
    });
    IRQ_COUNT.fetch_add(1, Ordering::Relaxed);
    WAKER.wake();
}

/// Number of controller interrupts handled since boot.
pub fn interrupts() -> u32 {
    IRQ_COUNT.load(Ordering::Relaxed)
}

/// A received frame, borrowed from the driver's RX buffer.
pub struct Rx<'a> {
    frame: &'a mut [u8],
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        f(self.frame)
    }
}

/// Room for one frame to send: the driver's TX buffer and the register block.
pub struct Tx<'a> {
    regs: &'a Regs,
    buf: &'a mut [u8; MTU],
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let r = f(&mut self.buf[..len]);
        // A token handed out with a reply to a received frame may find the FIFO short of room;
        // the controller drains it at line rate (a full frame in ~120 us at 100 Mbit/s), so
        // wait for room rather than overflow it. QEMU sends synchronously: never waits there.
        let need = len.next_multiple_of(4) + 8;
        for _ in 0..SPIN {
            if (self.regs.read(reg::TX_FIFO_INF) & 0xFFFF) as usize >= need {
                break;
            }
        }
        let len32 = len as u32;
        self.regs
            .write(reg::TX_DATA_FIFO, TX_CMD_A_FIRST_LAST | len32);
        self.regs.write(reg::TX_DATA_FIFO, (len32 << 16) | len32); // tag = length
        for chunk in self.buf[..len].chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.regs.write(reg::TX_DATA_FIFO, u32::from_le_bytes(w));
        }
        r
    }
}

/// Room a frame needs in the TX data FIFO: two command words and the padded data.
const TX_NEED: usize = MTU + 8 + 3;

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Rx<'_>, Tx<'_>)> {
        WAKER.register(cx.waker());
        PENDING.fetch_and(!int::RSFL, Ordering::AcqRel);
        loop {
            if self.rx_frames() == 0 {
                self.regs.enable(int::RSFL);
                // A frame may have landed between the check and arming: look once more.
                if self.rx_frames() == 0 {
                    return None;
                }
            }
            if let Some(len) = self.read_frame() {
                if self.tx_free() < TX_NEED {
                    // The reply token must be usable; the stack retries once TX has room.
                    self.regs.enable(int::TSFL | int::TDFA);
                }
                let Self {
                    regs,
                    rx_buf,
                    tx_buf,
                    ..
                } = self;
                return Some((
                    Rx {
                        frame: &mut rx_buf[..len],
                    },
                    Tx { regs, buf: tx_buf },
                ));
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Tx<'_>> {
        WAKER.register(cx.waker());
        self.drain_tx_status();
        if self.tx_free() < TX_NEED {
            self.regs.enable(int::TSFL | int::TDFA);
            if self.tx_free() < TX_NEED {
                return None;
            }
        }
        Some(Tx {
            regs: &self.regs,
            buf: &mut self.tx_buf,
        })
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        WAKER.register(cx.waker());
        self.refresh_link();
        self.regs.enable(int::PHY);
        if self.link_up {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(1);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
