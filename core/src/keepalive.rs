//! TODO: keepalive
