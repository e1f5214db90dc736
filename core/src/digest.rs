//! TODO: digest
