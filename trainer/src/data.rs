//! IDX dataset reading (placeholder, being written).
