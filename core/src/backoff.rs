//! TODO: backoff
