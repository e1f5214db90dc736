//! TODO: proto
