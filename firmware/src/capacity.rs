//! The compile-time capacities of the kiosk app, chosen to fit a terminal with 96 KiB of flash
//! and 48 KiB of RAM.
//!
//! | constant | value | what it bounds |
//! |---|---|---|
//! | [`POOL`] | 16 | messages the engine's pool holds (shown, pending and failed) |
//! | [`CONTENT`] | 256 | content bytes per message; longer pushes cannot be taken |
//! | [`TOPICS`] | 4 | topics the engine follows: `me` (consultation assignments) and [`TABLE`] more |
//! | [`TABLE`] | 3 | desk topics plus consultations served at once (`TOPICS - 1`) |
//! | [`OUTBOX`] | 4 | replies on their way (queued or waiting for the gateway's ack) |
//! | [`FRAME`] | 600 | the largest frame read or written (body up to 589 bytes) |
//! | [`SOCKET_RX`] / [`SOCKET_TX`] | 1024 | the TCP socket's receive and send buffers |
//! | [`READ_CHUNK`] | 256 | bytes taken from the socket per read |
//!
//! The gateway must not push contents longer than [`CONTENT`] to a terminal (run it with
//! `--max-content 256` for a desk served by terminals): a longer message would not fit a pool
//! slot nor a frame.

use kefu_core::engine::Engine;

/// Messages in the engine's pool.
pub const POOL: usize = 16;
/// Content bytes per message.
pub const CONTENT: usize = 256;
/// Topics the engine follows: `me` and up to [`TABLE`] desk topics and consultations.
pub const TOPICS: usize = 4;
/// Desk topics plus consultations the terminal serves at once (the engine's topics but `me`).
pub const TABLE: usize = TOPICS - 1;
/// Outgoing replies awaiting the gateway's acknowledgement.
pub const OUTBOX: usize = 4;
/// Frame buffer bytes: the largest frame read or written.
pub const FRAME: usize = 600;
/// TCP receive buffer bytes.
pub const SOCKET_RX: usize = 1024;
/// TCP send buffer bytes.
pub const SOCKET_TX: usize = 1024;
/// Bytes read from the socket at once.
pub const READ_CHUNK: usize = 256;

/// The engine with the kiosk's capacities.
pub type KioskEngine = Engine<POOL, CONTENT, TOPICS, OUTBOX, FRAME>;
