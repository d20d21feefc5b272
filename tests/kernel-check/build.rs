//! Puts the board's memory map (the firmware example's, by target: `mps3-an547.x` for the
//! Cortex-M55, `microbit.x` for the Cortex-M0, `mps2.x` for the Cortex-M4F and M3) on the linker's search path as
//! `memory.x` and links with cortex-m-rt's `link.x`.

use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").unwrap_or_default();
    let board = if target.starts_with("thumbv8m.main") {
        "mps3-an547.x"
    } else if target.starts_with("thumbv6m") {
        "microbit.x"
    } else {
        "mps2.x"
    };
    let memory = PathBuf::from("../../firmware-example/memory").join(board);
    fs::copy(&memory, out.join("memory.x")).expect("copy the board's memory map to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed={}", memory.display());
}
