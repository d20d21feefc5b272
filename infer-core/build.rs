//! Detects Cortex-M cores with the DSP extension (SMLAD, SXTB16, PKHBT, …).
//!
//! Stable Rust does not expose Arm's `dsp` target feature to `cfg`, so the target name
//! decides: `thumbv7em-*` (Cortex-M4, M7) has it; `thumbv6m` (M0) and `thumbv7m` (M3) do
//! not. With it, the build sets `cfg(infer_core_dsp)` and `kernels::dsp` uses the
//! instructions; elsewhere it uses portable Rust with the same results.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(infer_core_dsp)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") {
        println!("cargo::rustc-cfg=infer_core_dsp");
    }
}
