//! The kefu gateway: accepts connections, runs one session per connection, stores and fans out
//! messages, and drives the core's delivery windows.

pub mod auth;
pub mod binary;
pub mod config;
pub mod conn;
pub mod context;
pub mod desk;
pub mod http;
pub mod hub;
pub mod json;
pub mod listening;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod server;
pub mod session;
pub mod tcp;
pub mod throttle;
pub mod wire;

pub use config::GatewayConfig;
pub use server::{Running, StartError, start};
