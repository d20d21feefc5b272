//! What `cargo xtask` shares with the end-to-end tests: reading what the firmware prints
//! ([`report`]).

pub mod report;
