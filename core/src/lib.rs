//! kefu-core: the protocol core of the kefu customer-service IM stack.
//!
//! Everything here *decides* and nothing *waits*: no sockets, no clocks, no threads, no heap.
//! Inputs arrive as `handle_*(now, ..)` calls, outputs are drained with `poll_*` calls, and time
//! ([`time::Instant`]) and randomness ([`rng::Rng`]) are passed in by the caller, so the same code
//! runs under tokio, under embassy, and in deterministic simulations that replay exactly.
//!
//! | module | job |
//! |---|---|
//! | [`time`] | the core's own `Instant` / `Duration` (microseconds) |
//! | [`rng`] | the randomness trait and a small seeded generator |
//! | [`id`] | 16-byte message ids (48-bit ms timestamp + random), 32 hex chars |
//! | [`frame`] | binary framing with CRCs and a resynchronising streaming deframer |
//! | [`proto`] | the packet set, encoded with postcard, decoded as borrowed views |
//! | [`pool`] | the fixed-capacity message pool: per-topic order, virtual seq, dedup |
//! | [`order`] | per-topic receive tracking: contiguous mark, gaps, duplicates, coalesced acks |
//! | [`outbox`] | send-side window: retransmit with backoff, give-up, resend after reconnect |
//! | [`backoff`] | reconnect delays with jitter, link-down pause |
//! | [`keepalive`] | ping interval and dead-peer timeout |
//! | [`delivery`] | the gateway-side per-subscriber push window |
//! | [`digest`] | reconciliation checksums over the last N (id, seq) of a topic |
//! | [`engine`] | the client session state machine that composes all of the above |
#![cfg_attr(not(any(feature = "std", test)), no_std)]
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

pub mod backoff;
pub mod delivery;
pub mod digest;
pub mod engine;
pub mod frame;
pub mod id;
pub mod keepalive;
pub mod order;
pub mod outbox;
pub mod pool;
pub mod proto;
pub mod rng;
pub mod time;
