//! The kefu gateway: accepts connections, runs one session per connection, stores and fans out
//! messages, and drives the core's delivery windows.

pub mod json;
pub mod wire;
