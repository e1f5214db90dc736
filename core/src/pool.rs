//! TODO: pool
