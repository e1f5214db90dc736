//! The board side of the kiosk app: the screen is the semihosting console (one line per
//! message or status, which `run-demo.sh` reads), the keyboard is UART0 (one entry per typed
//! line), and the marks are kept in RAM that a reset does not clear.

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::channel::Channel;
use kefu_firmware::marks::ENCODED_MAX;
use kefu_firmware::{Display, Entry, Input, MarkTable, Shown, Status, Storage};

use crate::log;

/// Longest line typed on the keyboard: a reply of the app's content capacity plus a command
/// and a topic name (`/to TOPIC `).
pub const LINE: usize = kefu_firmware::capacity::CONTENT + 72;

/// Lines typed on UART0, from the UART task to the app.
pub static LINES: Channel<CriticalSectionRawMutex, heapless::String<LINE>, 2> = Channel::new();

/// The terminal's screen: semihosting lines `kefu-board: msg ...` / `kefu-board: status: ...`.
pub struct Screen;

impl Display for Screen {
    fn message(&mut self, m: &Shown<'_>) {
        log!("kefu-board: msg {}", m);
    }
    fn status(&mut self, s: &Status<'_>) {
        log!("kefu-board: status: {}", s);
    }
    fn log(&mut self, line: core::fmt::Arguments<'_>) {
        log!("kefu-board: app: {}", line);
    }
}

/// The terminal's keyboard: lines from [`LINES`], read with [`Entry::from_line`].
pub struct Keyboard {
    line: heapless::String<LINE>,
}

impl Keyboard {
    /// A keyboard with nothing typed yet.
    pub const fn new() -> Self {
        Keyboard {
            line: heapless::String::new(),
        }
    }
}

impl Input for Keyboard {
    async fn next(&mut self) -> Entry<'_> {
        // Channel::receive takes a line only when it completes: cancel-safe.
        self.line = LINES.receive().await;
        Entry::from_line(&self.line)
    }
}

/// The marks table in a RAM area cortex-m-rt leaves alone at reset (`.uninit`): it survives a
/// warm reset (QEMU's `system_reset`, a watchdog, the reset button), not a power loss. A magic
/// word and a checksum tell a kept table from whatever RAM held at power-on. A fleet board
/// keeps the same bytes in flash instead.
pub struct RetainedStorage;

#[repr(C)]
struct Retained {
    magic: u32,
    len: u32,
    sum: u32,
    bytes: [u8; ENCODED_MAX],
}

const MAGIC: u32 = 0x6b66_6d6b; // "kfmk"

#[unsafe(link_section = ".uninit.kefu_marks")]
static mut RETAINED: core::mem::MaybeUninit<Retained> = core::mem::MaybeUninit::uninit();

/// Fletcher-style checksum over the stored bytes and their length.
fn checksum(bytes: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, bytes.len() as u32);
    for &x in bytes {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

impl Storage for RetainedStorage {
    fn load_token(&mut self, _buf: &mut [u8]) -> Option<usize> {
        None // baked in at build time (KEFU_TOKEN)
    }

    fn load_marks(&mut self, table: &mut MarkTable) {
        // SAFETY: single-threaded use from the app task; any bit pattern is a valid `Retained`
        // (plain integers and bytes), and the magic and checksum reject garbage.
        let r = unsafe { (*core::ptr::addr_of!(RETAINED)).assume_init_ref() };
        let len = r.len as usize;
        let Some(bytes) = r.bytes.get(..len) else {
            return;
        };
        if r.magic != MAGIC || r.sum != checksum(bytes) {
            log!("kefu-board: no marks kept from before the reset");
            return;
        }
        match MarkTable::decode(bytes) {
            Ok(t) => {
                log!(
                    "kefu-board: marks kept from before the reset: {} topics",
                    t.rows().len()
                );
                *table = t;
            }
            Err(e) => log!("kefu-board: kept marks unreadable: {}", e),
        }
    }

    fn save_marks(&mut self, table: &MarkTable) {
        // SAFETY: as in `load_marks`; the area is written only here.
        let r = unsafe { (*core::ptr::addr_of_mut!(RETAINED)).assume_init_mut() };
        let Some(n) = table.encode(&mut r.bytes) else {
            return;
        };
        r.magic = 0; // a reset in the middle of this leaves no valid table
        r.len = n as u32;
        r.sum = checksum(&r.bytes[..n]);
        r.magic = MAGIC;
        log!("kefu-board: marks saved ({} topics)", table.rows().len());
    }
}
