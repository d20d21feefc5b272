//! Detects Cortex-M cores with the DSP extension (SMLAD, SXTB16, PKHBT, …).
//!
//! Stable Rust does not expose Arm's `dsp` target feature to `cfg`, so the target and the
//! flags decide: `thumbv7em-*` (Cortex-M4, M7) has it; `thumbv8m.main-*` has it when built
//! for a Cortex-M55 or M85 (`-C target-cpu=cortex-m55`) or with `-C target-feature=+dsp`;
//! `thumbv6m` (M0), `thumbv7m` (M3) and `thumbv8m.base` do not. With it, the build sets
//! `cfg(infer_core_dsp)` and `kernels::dsp` uses the instructions; elsewhere it uses
//! portable Rust with the same results.
//!
//! The M-profile Vector Extension (Helium, MVE) comes with the Cortex-M55 and M85 or with
//! `-C target-feature=+mve` (or `+mve.fp`) on `thumbv8m.main-*`: there the build also sets
//! `cfg(infer_core_mve)`, and `kernels::mve` uses its vector instructions.
//!
//! Cores with a 32 × 32 → 64-bit multiply-accumulate (`SMLAL`: Armv7-M, Armv7E-M, Armv8-M
//! mainline) get `cfg(infer_core_long_multiply)`; where they lack the DSP extension (the
//! Cortex-M3) the conv pixels go in pairs through `kernels::pairs`.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(infer_core_dsp)");
    println!("cargo::rustc-check-cfg=cfg(infer_core_mve)");
    println!("cargo::rustc-check-cfg=cfg(infer_core_long_multiply)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let target = std::env::var("TARGET").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    // `-C target-cpu=X` arrives as one flag or two (`-C`, `target-cpu=X`).
    let flag = |name: &str| {
        flags
            .split('\x1f')
            .filter_map(|f| f.trim_start_matches("-C").strip_prefix(name))
            .next_back()
            .unwrap_or_default()
            .to_string()
    };
    let cpu = flag("target-cpu=");
    let features = flag("target-feature=");
    let helium_cpu = matches!(cpu.as_str(), "cortex-m55" | "cortex-m85");
    let has = |feature: &str| features.split(',').any(|f| f == feature);
    let main = target.starts_with("thumbv8m.main-");
    // The M55 and M85 have both; MVE implies the DSP extension.
    let mve = main && (helium_cpu || has("+mve") || has("+mve.fp"));
    if target.starts_with("thumbv7em-") || mve || (main && has("+dsp")) {
        println!("cargo::rustc-cfg=infer_core_dsp");
    }
    if mve {
        println!("cargo::rustc-cfg=infer_core_mve");
    }
    // Armv7-M and Armv8-M mainline multiply 32 × 32 → 64 bits (`SMLAL`); Armv6-M (M0) and
    // Armv8-M baseline do not.
    if ["thumbv7m-", "thumbv7em-", "thumbv8m.main-"]
        .iter()
        .any(|t| target.starts_with(t))
    {
        println!("cargo::rustc-cfg=infer_core_long_multiply");
    }
}
