//! Training loop (placeholder, being written).
