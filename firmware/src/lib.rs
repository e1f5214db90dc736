//! kefu-firmware: the kiosk agent app of a kefu counter terminal.
//!
//! The app drives the sans-IO [`kefu_core::engine::Engine`] over one embassy-net TCP
//! connection to the gateway's framed binary protocol: `hi`, `login` with the device token,
//! `sub` to the desk's topics, shows and acknowledges pushed messages, publishes the agent's
//! replies (the core retries them), keeps the connection alive and reconnects with the core's
//! backoff when the link or the gateway goes away, resuming every topic from its mark.
//!
//! It is target-agnostic: generic over [`embassy_net::Stack`] and `embedded-io-async`, with no
//! executor, time driver or tick rate of its own (those belong to the board crate), `no_std`,
//! no heap; every buffer is sized at compile time (see [`capacity`]).
//!
//! At a service desk the terminal is an agent's seat: it goes Online, serves the consultations
//! the desk assigns to it (customers who `action open`), and tells the desk Busy when it has no
//! room for another (see [`app`]). It may also follow desk topics (groups) given in [`Config`].
//!
//! What differs per terminal is behind three traits in [`ui`]: [`Display`] (messages, status
//! lines and, without the `defmt` feature, plain-text log lines), [`Input`] (what the agent
//! enters: replies, closing a consultation, switching off) and [`Storage`] (device token and
//! the followed topics with their marks, saved in batches — see [`marks`]; [`NoStorage`] keeps
//! nothing).
//!
//! A board's `main` puts a [`Resources`] in a `StaticCell` and awaits [`run`], which returns
//! only when the agent switches the terminal off.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[macro_use]
mod log;
pub mod app;
pub mod capacity;
pub mod marks;
pub mod terminal;
pub mod ui;

pub use marks::{MarkTable, Row, TableError};
pub use terminal::{Config, Resources, RunError, run};
pub use ui::{Display, Entry, Input, Marks, NoStorage, Shown, Status, Storage};
