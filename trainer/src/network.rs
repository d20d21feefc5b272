//! Float model (placeholder, being written).
