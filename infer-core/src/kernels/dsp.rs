//! Packed 16-bit arithmetic of the Armv7E-M DSP extension (Cortex-M4, M7): two
//! multiply-accumulates per instruction.
//!
//! This is infer-core's only module with `unsafe` code: on a DSP core (`cfg(infer_core_dsp)`,
//! set by `build.rs` for `thumbv7em-*` targets) each function is one instruction of inline
//! assembly. Everywhere else, including the host where the tests run, each is portable Rust
//! computing the same value, so the kernels written with these functions are tested on the
//! host and behave identically on the device.
//!
//! A word holds two signed 16-bit halves: `lo` in bits 0..16, `hi` in bits 16..32.

#![allow(unsafe_code)]

#[cfg(infer_core_long_multiply)]
use core::arch::asm;

use super::fused::Filter3x3;
use super::mve::row_offset_terms;
use super::{put_sum, ChannelRequant};

/// The low half of `x`, sign-extended.
#[inline(always)]
pub const fn lo(x: u32) -> i32 {
    x as u16 as i16 as i32
}

/// The high half of `x`, sign-extended.
#[inline(always)]
pub const fn hi(x: u32) -> i32 {
    (x >> 16) as u16 as i16 as i32
}

/// Packs the low 16 bits of `lo` and of `hi` into one word.
#[inline(always)]
pub const fn pack(lo: i32, hi: i32) -> u32 {
    (lo as u16 as u32) | ((hi as u16 as u32) << 16)
}

/// The bytes of `words` as int8 values, in memory order: a working buffer of words seen as
/// bytes (for the int8 patches of `kernels::mve`).
#[inline(always)]
pub fn int8_of_words(words: &mut [u32]) -> &mut [i8] {
    // SAFETY: the bytes are exactly the words' memory (4 per word), borrowed mutably for as
    // long as `words` is, and any bit pattern is a valid `i8` (alignment 1).
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<i8>(), 4 * words.len()) }
}

/// Copies `src` into `dst`, over the shorter of the two. On DSP cores a loop of assembly (a
/// word at a time, any alignment, then the last two bytes and byte), so that the few dozen
/// bytes it copies call no `memcpy` (some 730 bytes of flash on the Cortex-M4); elsewhere
/// `copy_from_slice`.
#[inline(never)]
pub fn copy_bytes(dst: &mut [i8], src: &[i8]) {
    let n = dst.len().min(src.len());
    #[cfg(infer_core_dsp)]
    // SAFETY: it reads the first `n` bytes of `src` and writes the first `n` of `dst` (both
    // at least `n` long), in words of any alignment (which these cores load and store),
    // then a halfword and a byte; every register written is declared; no stack.
    unsafe {
        asm!(
            "lsrs {words}, {n}, #2",
            "beq 3f",
            "2:",
            "ldr {t}, [{src}], #4",
            "str {t}, [{dst}], #4",
            "subs {words}, {words}, #1",
            "bne 2b",
            "3:",
            // Bit 1 of `n` into C, bit 0 into N.
            "lsls {n}, {n}, #31",
            "itt cs",
            "ldrhcs {t}, [{src}], #2",
            "strhcs {t}, [{dst}], #2",
            "itt mi",
            "ldrbmi {t}, [{src}]",
            "strbmi {t}, [{dst}]",
            n = inout(reg) n => _,
            src = inout(reg) src.as_ptr() => _,
            dst = inout(reg) dst.as_mut_ptr() => _,
            words = out(reg) _,
            t = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(infer_core_dsp))]
    if let (Some(dst), Some(src)) = (dst.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// The halves of `words` as `i16` values, in memory order: a working buffer of words seen
/// as halfwords (for the widened values of `kernels::dot::dot4_wide`).
#[inline(always)]
pub fn halves_of_words(words: &mut [u32]) -> &mut [i16] {
    // SAFETY: the halves are exactly the words' memory (2 per word), borrowed mutably for
    // as long as `words` is; a word's alignment (4) satisfies an `i16`'s (2), and any bit
    // pattern is a valid `i16`.
    unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<i16>(), 2 * words.len()) }
}

/// The little-endian word of four bytes at any address: one `LDR` on DSP cores (which load
/// unaligned words; the compiler, not assuming so, builds it from four byte loads).
#[inline(always)]
pub fn word(bytes: &[u8; 4]) -> u32 {
    #[cfg(infer_core_dsp)]
    // SAFETY: `bytes` is four readable bytes.
    unsafe {
        ldr(bytes.as_ptr())
    }
    #[cfg(not(infer_core_dsp))]
    u32::from_le_bytes(*bytes)
}

/// [`word`] of four int8 values (their bytes).
#[inline(always)]
pub fn word_i8(values: &[i8; 4]) -> u32 {
    #[cfg(infer_core_dsp)]
    // SAFETY: `values` is four readable bytes.
    unsafe {
        ldr(values.as_ptr().cast())
    }
    #[cfg(not(infer_core_dsp))]
    u32::from_le_bytes(values.map(|v| v as u8))
}

/// `LDR` of the word at `p`, aligned or not.
///
/// # Safety
/// `p` must point to four readable bytes.
#[cfg(infer_core_dsp)]
#[inline(always)]
unsafe fn ldr(p: *const u8) -> u32 {
    let out: u32;
    // SAFETY: the caller's promise; reads four bytes, no stack, no flags.
    unsafe {
        asm!("ldr {0}, [{1}]", lateout(reg) out, in(reg) p,
             options(pure, readonly, nostack, preserves_flags));
    }
    out
}

/// `SXTB16`: bytes 0 and 2 of `x`, sign-extended to the low and high halves.
#[inline(always)]
pub fn sxtb16(x: u32) -> u32 {
    #[cfg(infer_core_dsp)]
    {
        let out: u32;
        // SAFETY: SXTB16 reads one register and writes one; it touches no memory, no
        // stack and no flags.
        unsafe {
            asm!("sxtb16 {0}, {1}", lateout(reg) out, in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(infer_core_dsp))]
    {
        pack(i32::from(x as u8 as i8), i32::from((x >> 16) as u8 as i8))
    }
}

/// `SXTB16 …, ROR #8`: bytes 1 and 3 of `x`, sign-extended to the low and high halves.
#[inline(always)]
pub fn sxtb16_ror8(x: u32) -> u32 {
    #[cfg(infer_core_dsp)]
    {
        let out: u32;
        // SAFETY: as in `sxtb16`: registers only.
        unsafe {
            asm!("sxtb16 {0}, {1}, ror #8", lateout(reg) out, in(reg) x,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(infer_core_dsp))]
    {
        pack(
            i32::from((x >> 8) as u8 as i8),
            i32::from((x >> 24) as u8 as i8),
        )
    }
}

/// `PKHBT a, b, LSL #16`: `(lo(a), lo(b))`.
#[inline(always)]
pub fn pkhbt(a: u32, b: u32) -> u32 {
    #[cfg(infer_core_dsp)]
    {
        let out: u32;
        // SAFETY: registers only, no flags.
        unsafe {
            asm!("pkhbt {0}, {1}, {2}, lsl #16", lateout(reg) out, in(reg) a, in(reg) b,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(infer_core_dsp))]
    {
        (a & 0xFFFF) | (b << 16)
    }
}

/// `PKHTB a, b, ASR #16`: `(hi(b), hi(a))`, i.e. `b`'s high half low, `a`'s high half high.
#[inline(always)]
pub fn pkhtb(a: u32, b: u32) -> u32 {
    #[cfg(infer_core_dsp)]
    {
        let out: u32;
        // SAFETY: registers only, no flags.
        unsafe {
            asm!("pkhtb {0}, {1}, {2}, asr #16", lateout(reg) out, in(reg) a, in(reg) b,
                 options(pure, nomem, nostack, preserves_flags));
        }
        out
    }
    #[cfg(not(infer_core_dsp))]
    {
        (a & 0xFFFF_0000) | (b >> 16)
    }
}

/// A halfword-parallel instruction `$insn d, a, b` (which sets the GE flags, so flags are
/// not declared preserved), and its portable twin `$portable` on the halves.
macro_rules! halfword_op {
    ($(#[$doc:meta])* $name:ident, $insn:literal, $portable:path) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(a: u32, b: u32) -> u32 {
            #[cfg(infer_core_dsp)]
            {
                let out: u32;
                // SAFETY: registers only; sets the GE flags.
                unsafe {
                    asm!(concat!($insn, " {0}, {1}, {2}"), lateout(reg) out, in(reg) a,
                         in(reg) b, options(pure, nomem, nostack));
                }
                out
            }
            #[cfg(not(infer_core_dsp))]
            {
                pack($portable(lo(a), lo(b)), $portable(hi(a), hi(b)))
            }
        }
    };
}

halfword_op!(
    /// `SSUB16`: `(lo(a) − lo(b), hi(a) − hi(b))`, each half wrapping.
    ssub16,
    "ssub16",
    i32::wrapping_sub
);

halfword_op!(
    /// `SADD16`: `(lo(a) + lo(b), hi(a) + hi(b))`, each half wrapping.
    sadd16,
    "sadd16",
    i32::wrapping_add
);

/// `SMLAD`: `acc + lo(a)·lo(b) + hi(a)·hi(b)`, wrapping.
///
/// The instruction's sum is exact modulo 2^32 (it only sets the sticky Q flag on
/// overflow, which nothing reads), the same as the wrapping sum here.
#[inline(always)]
pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    #[cfg(infer_core_dsp)]
    {
        let out: i32;
        // SAFETY: registers only; may set the Q flag, so flags are not declared preserved.
        unsafe {
            asm!("smlad {0}, {1}, {2}, {3}", lateout(reg) out, in(reg) a, in(reg) b, in(reg) acc,
                 options(pure, nomem, nostack));
        }
        out
    }
    #[cfg(not(infer_core_dsp))]
    {
        acc.wrapping_add(lo(a) * lo(b)).wrapping_add(hi(a) * hi(b))
    }
}

/// A halfword multiply-accumulate `$insn d, a, b, acc` (which may set the Q flag) with
/// halves `$a` of `a` and `$b` of `b`, and its portable twin.
macro_rules! halfword_mac {
    ($(#[$doc:meta])* $name:ident, $insn:literal, $a:ident, $b:ident) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(a: u32, b: u32, acc: i32) -> i32 {
            #[cfg(infer_core_dsp)]
            {
                let out: i32;
                // SAFETY: registers only; may set the Q flag.
                unsafe {
                    asm!(concat!($insn, " {0}, {1}, {2}, {3}"), lateout(reg) out, in(reg) a,
                         in(reg) b, in(reg) acc, options(pure, nomem, nostack));
                }
                out
            }
            #[cfg(not(infer_core_dsp))]
            {
                acc.wrapping_add($a(a) * $b(b))
            }
        }
    };
}

halfword_mac!(
    /// `SMLABB`: `acc + lo(a)·lo(b)`, wrapping.
    smlabb,
    "smlabb",
    lo,
    lo
);

halfword_mac!(
    /// `SMLATB`: `acc + hi(a)·lo(b)`, wrapping.
    smlatb,
    "smlatb",
    hi,
    lo
);

halfword_mac!(
    /// `SMLATT`: `acc + hi(a)·hi(b)`, wrapping.
    smlatt,
    "smlatt",
    hi,
    hi
);

/// Most kernel taps of a [`DwQuad`] (a 3 × 3 window).
pub const DW_TAPS: usize = 9;

/// Words of a [`DwTap`]: on DSP cores the offset and the four weights as two words of
/// packed halves (channels 0 and 2, 1 and 3), which `SMLABB`/`SMLATT` take as they are;
/// elsewhere the offset and the four weights one word each, for `MLA`.
#[cfg(infer_core_dsp)]
pub const DW_TAP_WORDS: usize = 3;
/// Words of a [`DwTap`]: on DSP cores the offset and the four weights as two words of
/// packed halves (channels 0 and 2, 1 and 3), which `SMLABB`/`SMLATT` take as they are;
/// elsewhere the offset and the four weights one word each, for `MLA`.
#[cfg(not(infer_core_dsp))]
pub const DW_TAP_WORDS: usize = 5;

/// One tap of a [`DwQuad`]: the byte offset of its four int8 inputs from the pixel's
/// origin (an `i32`'s bits), then its four weights ([`dw_tap`] writes them,
/// [`dw_tap_weights`] reads them).
pub type DwTap = [u32; DW_TAP_WORDS];

/// The tap at `offset` with weights `w` (each in `i16` range; [`DwQuad`] takes them
/// doubled).
pub fn dw_tap(offset: i32, w: [i32; 4]) -> DwTap {
    #[cfg(infer_core_dsp)]
    {
        [offset as u32, pack(w[0], w[2]), pack(w[1], w[3])]
    }
    #[cfg(not(infer_core_dsp))]
    {
        [
            offset as u32,
            w[0] as u32,
            w[1] as u32,
            w[2] as u32,
            w[3] as u32,
        ]
    }
}

/// The four weights of tap `t`, as the assembly of [`dw_quads`] multiplies them.
pub fn dw_tap_weights(t: &DwTap) -> [i32; 4] {
    #[cfg(infer_core_dsp)]
    {
        [lo(t[1]), lo(t[2]), hi(t[1]), hi(t[2])]
    }
    #[cfg(not(infer_core_dsp))]
    {
        [t[1] as i32, t[2] as i32, t[3] as i32, t[4] as i32]
    }
}

/// One channel's requantization in [`dw_quads`]: TFLite's `MultiplyByQuantizedMultiplier`
/// for a right shift `shift` in `1..=31` (`half` = `2^(shift − 1)`), the output zero point
/// added, clamped to `-128..=127`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DwRequant {
    /// The Q31 multiplier (≥ 0).
    pub multiplier: i32,
    /// `2^(shift − 1)`: the rounding of the right shift.
    pub half: i32,
    /// The right shift.
    pub shift: i32,
    /// The output zero point.
    pub zero_point: i32,
}

/// A block of output pixels of four channels of a depthwise conv (a multiplier of 1), as
/// [`dw_quads`] computes them: `rows × cols` pixels, each with its window's taps at the
/// same offsets from its origin, its four channels' sums requantized by `requant`.
///
/// The sums are doubled: weights and bias are stored times two, so the requantization's
/// doubling high multiply is one `SMMLAR` (`(2·acc · M + 2^31) >> 32` is gemmlowp's
/// `(acc · M + 2^30) >> 31`, rounded alike on both signs, while `|acc| < 2^30`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct DwQuad {
    /// Each channel's sum before its taps, doubled (the bias with the input offset's
    /// share folded in).
    pub bias: [i32; 4],
    /// The taps, their weights doubled ([`dw_tap`]). A tap of zero weights still reads
    /// its word.
    pub taps: [DwTap; DW_TAPS],
    /// The four channels' requantizations.
    pub requant: [DwRequant; 4],
    /// Input bytes from one pixel's origin to the next in a row.
    pub in_step: i32,
    /// Output bytes from one pixel's first channel to the next in a row.
    pub out_step: i32,
    /// Input bytes from one row's first origin to the next row's.
    pub in_row: i32,
    /// Output bytes from one row's first pixel to the next row's.
    pub out_row: i32,
    /// Pixels per row.
    pub cols: u32,
    /// Rows.
    pub rows: u32,
}

/// Where the assembly of [`dw_quads`] finds the steps of a pixel (the end of its walk
/// through the biases, taps and requantizations), of a row, and the columns.
const DW_STEPS: usize = core::mem::offset_of!(DwQuad, in_step);
#[cfg(infer_core_long_multiply)]
const DW_IN_ROW: usize = core::mem::offset_of!(DwQuad, in_row);
#[cfg(infer_core_long_multiply)]
const DW_OUT_ROW: usize = core::mem::offset_of!(DwQuad, out_row);
#[cfg(infer_core_long_multiply)]
const DW_COLS: usize = core::mem::offset_of!(DwQuad, cols);
// The walk: four biases, the taps, four requantizations of four words, then the steps.
const _: () = assert!(DW_STEPS == 4 * (4 + DW_TAPS * DW_TAP_WORDS + 16));

impl DwQuad {
    /// Whether [`dw_quads`] computes the block (and its assembly may run): at least one pixel, steps ≥ 0, every tap's
    /// word inside `input` (`len` bytes) for every pixel (the first
    /// origin at `origin`) and every pixel's four outputs inside `output` (`out_len`
    /// bytes, the first at `out_at`).
    fn fits(&self, len: usize, origin: isize, out_len: usize, out_at: usize) -> bool {
        let steps = [self.in_step, self.out_step, self.in_row, self.out_row];
        if steps.iter().any(|&s| s < 0) {
            return false;
        }
        let (lo, hi) = self.taps.iter().fold((i32::MAX, i32::MIN), |(lo, hi), t| {
            (lo.min(t[0] as i32), hi.max(t[0] as i32))
        });
        // Checked arithmetic in `isize`: cheap on the 32-bit cores, and any overflow is a
        // block that does not fit.
        let inside = || -> Option<bool> {
            let rows = isize::try_from(self.rows).ok()?.checked_sub(1)?;
            let cols = isize::try_from(self.cols).ok()?.checked_sub(1)?;
            // (Small factors multiplied as they are: `checked_mul` is a 64-bit multiply, a
            // library call on the Cortex-M0, where four of them per block made ds-cnn's
            // depthwise convs 2 % slower.)
            let mul = |n: isize, step: i32| match (n, step) {
                (0..0x8000, -0x8000..0x8000) => Some(n * step as isize),
                _ => n.checked_mul(step as isize),
            };
            let last = |row: i32, step: i32| mul(rows, row)?.checked_add(mul(cols, step)?);
            let end = origin
                .checked_add(last(self.in_row, self.in_step)?)?
                .checked_add(hi as isize)?
                .checked_add(4)?;
            let out_end = isize::try_from(out_at)
                .ok()?
                .checked_add(last(self.out_row, self.out_step)?)?
                .checked_add(4)?;
            Some(
                origin.checked_add(lo as isize)? >= 0
                    && end <= isize::try_from(len).ok()?
                    && out_end <= isize::try_from(out_len).ok()?,
            )
        };
        self.rows > 0 && self.cols > 0 && inside() == Some(true)
    }
}

/// `acc + ((a · b + 2^31) >> 32)`, wrapping: `SMMLAR`.
#[inline(always)]
pub fn smmlar(a: i32, b: i32, acc: i32) -> i32 {
    // From the magnitudes (`wide_product`: no library call on the Cortex-M0): a product
    // `−p` rounds to `−((p + 2^31 − 1) >> 32)`.
    let negative = (a ^ b) < 0;
    let p = crate::requant::wide_product(a.unsigned_abs(), b.unsigned_abs());
    let high = ((p + (1 << 31) - u64::from(negative)) >> 32) as i32;
    acc.wrapping_add(if negative { high.wrapping_neg() } else { high })
}

/// One doubled sum requantized as [`dw_quads`] does: `SMMLAR` with the rounding half,
/// one less if the sum is negative, shifted right (`ASR` by register: 32 or more gives
/// the sign), the zero point added, saturated to int8 (`SSAT`).
#[inline(always)]
pub fn dw_requantize(acc: i32, r: &DwRequant) -> i8 {
    let t = smmlar(acc, r.multiplier, r.half).wrapping_add(acc >> 31);
    let s = r.shift as u32 & 0xFF;
    let t = if s >= 32 { t >> 31 } else { t >> s };
    t.wrapping_add(r.zero_point).clamp(-128, 127) as i8
}

/// One tap of [`dw_quads_asm`] on DSP cores: offset and packed weights loaded (`LDM`),
/// the four inputs' word, two `SXTB16`, four `SMLAxx`.
#[cfg(infer_core_dsp)]
macro_rules! dw_tap {
    () => {
        concat!(
            "ldm r5!, {{r8, r9, r10}}\n",
            "ldr r11, [r4, r8]\n",
            "sxtb16 r12, r11\n",
            "sxtb16 r11, r11, ror #8\n",
            "smlabb r0, r12, r9, r0\n",
            "smlatt r2, r12, r9, r2\n",
            "smlabb r1, r11, r10, r1\n",
            "smlatt r3, r11, r10, r3\n",
        )
    };
}

/// One tap of [`dw_quads_asm`] without the DSP extension: offset and weights loaded
/// (`LDM`), the four inputs' word, each byte sign-extended (`SXTB`, the last by `ASR`) and
/// multiplied in (`MLA`).
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! dw_tap {
    () => {
        concat!(
            "ldm r5!, {{r8, r9, r10, r11, r12}}\n",
            "ldr lr, [r4, r8]\n",
            "sxtb r8, lr\n",
            "mla r0, r8, r9, r0\n",
            "sxtb r8, lr, ror #8\n",
            "mla r1, r8, r10, r1\n",
            "sxtb r8, lr, ror #16\n",
            "mla r2, r8, r11, r2\n",
            "asr lr, lr, #24\n",
            "mla r3, lr, r12, r3\n",
        )
    };
}

/// The high word of the doubled sum `$acc` times the multiplier (r8), rounded, plus the
/// rounding half (r9), into r9: `SMMLAR` on DSP cores.
#[cfg(infer_core_dsp)]
macro_rules! dw_scale {
    ($acc:literal) => {
        concat!("smmlar r9, ", $acc, ", r8, r9\n")
    };
}

/// The high word of the doubled sum `$acc` times the multiplier (r8), rounded, plus the
/// rounding half (r9), into r9: `SMLAL` onto `half · 2^32 + 2^31` without the DSP
/// extension.
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! dw_scale {
    ($acc:literal) => {
        concat!("mov r12, #0x80000000\n", "smlal r12, r9, ", $acc, ", r8\n")
    };
}

/// One channel's requantization in [`dw_quads_asm`] ([`dw_requantize`]): its parameters
/// loaded (`LDM`: multiplier, half, shift, zero point), the scaling ([`dw_scale`]), one
/// less for a negative sum, the shift, the zero point, `SSAT`, the byte stored at `$byte`
/// of the pixel.
#[cfg(infer_core_long_multiply)]
macro_rules! dw_requant {
    ($acc:literal, $byte:literal) => {
        concat!(
            "ldm r5!, {{r8, r9, r10, r11}}\n",
            dw_scale!($acc),
            "add r9, r9, ",
            $acc,
            ", asr #31\n",
            "asr r9, r9, r10\n",
            "add r9, r9, r11\n",
            "ssat r9, #8, r9\n",
            "strb r9, [r6, #",
            $byte,
            "]\n",
        )
    };
}

/// Computes the block of pixels of `q`: pixel `(i, j)` (row `i < rows`, column
/// `j < cols`) reads its taps' words at `origin + i · in_row + j · in_step + offset` of
/// `input` (int8 values of four channels each) and writes its four channels at
/// `out_at + i · out_row + j · out_step` of `output`: for each channel `c`, `bias[c] +
/// Σ x[c] · w[c]` over the taps, requantized by [`dw_requantize`]. Nothing is computed
/// unless every word read and written lies inside the slices.
///
/// One block of assembly (`dw_quads_asm`): per pixel 108 instructions on a DSP core (the
/// biases loaded, eight per tap, seven per channel's requantization, seven to step on), 130
/// on the Cortex-M3 (ten per tap, eight per requantization); elsewhere
/// [`dw_quads_portable`]. (The assembly's cores linked the portable twin as well, for
/// blocks that do not fit, until such blocks computed nothing: 844 bytes of flash.)
#[inline(never)]
pub fn dw_quads(q: &DwQuad, input: &[i8], origin: isize, output: &mut [i8], out_at: usize) {
    #[cfg(infer_core_long_multiply)]
    if q.fits(input.len(), origin, output.len(), out_at) {
        dw_quads_asm(q, input, origin, output, out_at);
    }
    #[cfg(not(infer_core_long_multiply))]
    dw_quads_portable(q, input, origin, output, out_at);
}

/// [`dw_quads`]' assembly, where `fits`.
#[cfg(infer_core_long_multiply)]
#[inline(always)]
fn dw_quads_asm(q: &DwQuad, input: &[i8], origin: isize, output: &mut [i8], out_at: usize) {
    // Registers: the four sums r0–r3; the pixel's origin r4; the walk through `q` r5
    // (back to its start after each pixel); the pixel's output r6; the pixels left in the
    // row r7; a tap's offset and weights, then a channel's parameters and results, r8–r12;
    // the input word and its halves r11 r12 (DSP) or lr. The rows left (r1 on entry), the
    // row's first origin and output are pushed during the row.
    // SAFETY: the caller checked `fits`: every word the block reads, `origin + i · in_row
    // + j · in_step + offset` for every pixel (i, j) and tap (steps ≥ 0, so the first and
    // last pixels bound them; word loads may be unaligned on these cores), lies inside
    // `input`, and every pixel's four bytes inside `output`; rows and cols are at least 1.
    // `r5` reads `q` (`repr(C)`, word-aligned as LDM needs) and comes back to its start.
    // The block saves r6 and r7 (which cannot be operands: LLVM's base and frame
    // pointers) and pops all it pushes; every other register it writes is declared.
    unsafe {
        asm!(
            "push {{r6, r7}}",
            "mov r6, r0",
            "3:",
            "push {{r1, r4, r6}}",
            "ldr r7, [r5, #{cols}]",
            "2:",
            "ldm r5!, {{r0, r1, r2, r3}}",
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_tap!(),
            dw_requant!("r0", "0"),
            dw_requant!("r1", "1"),
            dw_requant!("r2", "2"),
            dw_requant!("r3", "3"),
            "ldm r5, {{r8, r9}}",
            "add r4, r8",
            "add r6, r9",
            "sub r5, #{steps}",
            "subs r7, #1",
            "bne 2b",
            "pop {{r1, r4, r6}}",
            "ldr r8, [r5, #{in_row}]",
            "add r4, r8",
            "ldr r8, [r5, #{out_row}]",
            "add r6, r8",
            "subs r1, #1",
            "bne 3b",
            "pop {{r6, r7}}",
            inout("r0") output.as_mut_ptr().wrapping_add(out_at) => _,
            inout("r1") q.rows => _,
            out("r2") _,
            out("r3") _,
            inout("r4") input.as_ptr().wrapping_offset(origin) => _,
            inout("r5") core::ptr::from_ref(q) => _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            out("lr") _,
            cols = const DW_COLS,
            steps = const DW_STEPS,
            in_row = const DW_IN_ROW,
            out_row = const DW_OUT_ROW,
        );
    }
}

/// [`dw_quads`] in plain integer arithmetic (the reference the assembly is tested against,
/// and the code elsewhere).
#[cfg_attr(infer_core_long_multiply, inline(never))]
pub fn dw_quads_portable(
    q: &DwQuad,
    input: &[i8],
    origin: isize,
    output: &mut [i8],
    out_at: usize,
) {
    if !q.fits(input.len(), origin, output.len(), out_at) {
        return;
    }
    let at = |start: isize, row: i32, step: i32, i: u32, j: u32| {
        start
            .wrapping_add((row as isize).wrapping_mul(i as isize))
            .wrapping_add((step as isize).wrapping_mul(j as isize))
    };
    for i in 0..q.rows {
        for j in 0..q.cols {
            let pixel = at(origin, q.in_row, q.in_step, i, j);
            let mut acc = q.bias;
            for tap in &q.taps {
                let Some(x) = usize::try_from(pixel.wrapping_add(tap[0] as i32 as isize))
                    .ok()
                    .and_then(|at| input.get(at..at.checked_add(4)?))
                else {
                    continue;
                };
                for ((a, &x), w) in acc.iter_mut().zip(x).zip(dw_tap_weights(tap)) {
                    *a = a.wrapping_add(i32::from(x).wrapping_mul(w));
                }
            }
            let out = at(out_at as isize, q.out_row, q.out_step, i, j);
            let Some(out) = usize::try_from(out)
                .ok()
                .and_then(|at| output.get_mut(at..at.checked_add(4)?))
            else {
                continue;
            };
            for (o, (&a, r)) in out.iter_mut().zip(acc.iter().zip(&q.requant)) {
                *o = dw_requantize(a, r);
            }
        }
    }
}

/// The input of [`windows`]: a 4×4 patch (rows `[x0 x1 x2 x3]`) as the paired words
/// of [`crate::kernels::fused::Stream3x3`]'s paired loops, in this order:
/// `E0, O0, E1, O1, E2, O2, E3, O3, L0, R0, L1, R1`, where `Er = (x0, x2)` and
/// `Or = (x1, x3)` of row `r`, `Ld = (x1 of row d, x1 of row d + 1)` and
/// `Rd = (x2 of row d, x2 of row d + 1)`.
pub type Patch = [u32; 12];

/// A patch and room for `F` results right after it, as [`windows`] wants them: one
/// buffer, so that its loop can find its end from the patch's address.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct PatchOut<const F: usize> {
    /// The input.
    pub patch: Patch,
    /// One result per filter.
    pub out: [u32; F],
}

/// `F` filters' pooled values at one position: for each filter of `filters`, the max
/// `m` of its four 3×3 windows' accumulators `bias + Σ x·w` over `po.patch`, requantized
/// as [`Requant::Fast`](crate::kernels::fused) does — 0 if `m ≤ 0`, else
/// `((m·M + 2^30) >> 31 + 2^(r−1)) >> r` — but not yet capped; into `po.out`.
///
/// On a DSP core this is a loop of assembly (20 `SMLAD`-class instructions per filter,
/// the loads scheduled by hand); elsewhere [`windows_portable`].
#[inline(never)]
pub fn windows<const F: usize>(po: &mut PatchOut<F>, filters: &[Filter3x3; F]) {
    if F == 0 {
        return;
    }
    #[cfg(infer_core_dsp)]
    {
        // Per filter (`Filter3x3`, `repr(C)`: pairs p0 p1 p2 m01 m2 at 0..20, bias at
        // 20, multiplier at 24; 28 bytes): the four window sums, bias first; their max;
        // cleared if ≤ 0, else requantized; stored; until `op` reaches the end of `out`,
        // `end` bytes past the patch.
        // SAFETY: `fp` walks the F filters (28·F readable bytes of `filters`), `ip` reads
        // the 48 bytes of `po.patch`, `op` writes the 4·F bytes of `po.out`, which
        // `repr(C)` places right after the patch, so the loop stops exactly at its end
        // (F ≥ 1 checked above). All are 4-byte aligned (LDRD needs it). Nothing else is
        // read or written, the stack is not touched, and every register written is
        // declared.
        unsafe {
            let ip = po.patch.as_ptr();
            let op = po.out.as_mut_ptr();
            asm!(
                "2:",
                "ldrd {x1}, {x2}, [{ip}]",
                "ldr {w}, [{fp}]",
                "ldr {b}, [{fp}, #20]",
                "smlad {l0}, {x1}, {w}, {b}",
                "smlad {r0}, {x2}, {w}, {b}",
                "ldrd {x1}, {x2}, [{ip}, #8]",
                "smlad {l1}, {x1}, {w}, {b}",
                "smlad {r1}, {x2}, {w}, {b}",
                "ldr {w}, [{fp}, #4]",
                "smlad {l0}, {x1}, {w}, {l0}",
                "smlad {r0}, {x2}, {w}, {r0}",
                "ldrd {x1}, {x2}, [{ip}, #16]",
                "smlad {l1}, {x1}, {w}, {l1}",
                "smlad {r1}, {x2}, {w}, {r1}",
                "ldr {w}, [{fp}, #8]",
                "smlad {l0}, {x1}, {w}, {l0}",
                "smlad {r0}, {x2}, {w}, {r0}",
                "ldr {b}, [{fp}, #16]",
                "smlabb {l0}, {x2}, {b}, {l0}",
                "smlatb {r0}, {x1}, {b}, {r0}",
                "ldrd {x1}, {x2}, [{ip}, #24]",
                "smlad {l1}, {x1}, {w}, {l1}",
                "smlad {r1}, {x2}, {w}, {r1}",
                "smlabb {l1}, {x2}, {b}, {l1}",
                "smlatb {r1}, {x1}, {b}, {r1}",
                "ldr {w}, [{fp}, #12]",
                "ldrd {x1}, {x2}, [{ip}, #32]",
                "smlad {l0}, {x1}, {w}, {l0}",
                "smlad {r0}, {x2}, {w}, {r0}",
                "ldrd {x1}, {x2}, [{ip}, #40]",
                "smlad {l1}, {x1}, {w}, {l1}",
                "smlad {r1}, {x2}, {w}, {r1}",
                // m = max of the four.
                "cmp {l0}, {r0}",
                "it lt",
                "movlt {l0}, {r0}",
                "cmp {l1}, {r1}",
                "it lt",
                "movlt {l1}, {r1}",
                "cmp {l0}, {l1}",
                "it lt",
                "movlt {l0}, {l1}",
                // m ≤ 0 → 0 (and done).
                "bics {l0}, {l0}, {l0}, asr #31",
                "beq 4f",
                // x = (m·M + 2^30) >> 31, unsigned: both factors are non-negative.
                "ldr {w}, [{fp}, #24]",
                "mov {x1}, #0x40000000",
                "movs {x2}, #0",
                "umlal {x1}, {x2}, {l0}, {w}",
                "lsrs {x1}, {x1}, #31",
                "orr {x1}, {x1}, {x2}, lsl #1",
                // (x + 2^(r-1)) >> r, r in the high half of m2.
                "lsrs {b}, {b}, #16",
                "movs {x2}, #1",
                "lsls {x2}, {x2}, {b}",
                "add {x1}, {x1}, {x2}, lsr #1",
                "lsrs {l0}, {x1}, {b}",
                "4:",
                "str {l0}, [{op}], #4",
                "adds {fp}, #28",
                "subs {x1}, {op}, {ip}",
                "cmp {x1}, #{end}",
                "bne 2b",
                end = const 48 + 4 * F,
                fp = inout(reg) filters.as_ptr() => _,
                ip = in(reg) ip,
                op = inout(reg) op => _,
                l0 = out(reg) _,
                r0 = out(reg) _,
                l1 = out(reg) _,
                r1 = out(reg) _,
                w = out(reg) _,
                b = out(reg) _,
                x1 = out(reg) _,
                x2 = out(reg) _,
                options(nostack),
            );
        }
    }
    #[cfg(not(infer_core_dsp))]
    windows_portable(po, filters);
}

/// Whether `octets` (at least one) octets of taps fit `patch` (4 words each) and both
/// weight rows (8 bytes each): [`dot2_octets`]'s precondition.
fn octets_fit(patch: &[u32], w0: &[u8], w1: &[u8], octets: usize) -> bool {
    octets > 0 && patch.len() / 4 >= octets && w0.len().min(w1.len()) / 8 >= octets
}

/// Two filters' dot products over the first `8 · octets` taps of a packed patch (the words
/// of [`crate::kernels::dot::pack_patch`]: `(x0, x2), (x1, x3)` per group of four) and
/// int8 weights `w0`, `w1` (bytes, any alignment), added to `acc`. Returns `acc` unchanged
/// if a slice is shorter than that.
///
/// On a DSP core this is a loop of assembly: eight taps of both filters in 24 instructions
/// (each patch word loaded once for both filters, `SMLAD` on pairs); elsewhere
/// [`dot2_octets_portable`].
#[inline(never)]
pub fn dot2_octets(patch: &[u32], w0: &[u8], w1: &[u8], octets: usize, acc: [i32; 2]) -> [i32; 2] {
    if !octets_fit(patch, w0, w1, octets) {
        return acc;
    }
    #[cfg(infer_core_dsp)]
    {
        let [mut acc0, mut acc1] = acc;
        // SAFETY: `pp` reads 16 · octets bytes of `patch` (4 · octets words, checked above;
        // word-aligned, which LDRD needs), `pa` and `pb` read 8 · octets bytes of `w0` and
        // `w1` (checked above; LDR of a word may be unaligned on these cores), `n` counts the
        // octets down from at least 1. Nothing is written to memory, the stack is not
        // touched, and every register written is declared.
        unsafe {
            asm!(
                "2:",
                "ldrd {p0}, {p1}, [{pp}], #8",
                "ldrd {p2}, {p3}, [{pp}], #8",
                "ldr {w}, [{pa}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a0}, {t}, {p0}, {a0}",
                "smlad {a0}, {w}, {p1}, {a0}",
                "ldr {w}, [{pa}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a0}, {t}, {p2}, {a0}",
                "smlad {a0}, {w}, {p3}, {a0}",
                "ldr {w}, [{pb}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a1}, {t}, {p0}, {a1}",
                "smlad {a1}, {w}, {p1}, {a1}",
                "ldr {w}, [{pb}], #4",
                "sxtb16 {t}, {w}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a1}, {t}, {p2}, {a1}",
                "smlad {a1}, {w}, {p3}, {a1}",
                "subs {n}, {n}, #1",
                "bne 2b",
                pp = inout(reg) patch.as_ptr() => _,
                pa = inout(reg) w0.as_ptr() => _,
                pb = inout(reg) w1.as_ptr() => _,
                n = inout(reg) octets => _,
                a0 = inout(reg) acc0,
                a1 = inout(reg) acc1,
                p0 = out(reg) _,
                p1 = out(reg) _,
                p2 = out(reg) _,
                p3 = out(reg) _,
                w = out(reg) _,
                t = out(reg) _,
                options(nostack, readonly),
            );
        }
        [acc0, acc1]
    }
    #[cfg(not(infer_core_dsp))]
    dot2_octets_portable(patch, w0, w1, octets, acc)
}

/// [`dot2_octets`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dot2_octets_portable(
    patch: &[u32],
    w0: &[u8],
    w1: &[u8],
    octets: usize,
    acc: [i32; 2],
) -> [i32; 2] {
    if !octets_fit(patch, w0, w1, octets) {
        return acc;
    }
    let [mut acc0, mut acc1] = acc;
    for (g, words) in patch.chunks_exact(2).take(2 * octets).enumerate() {
        let word =
            |w: &[u8]| u32::from_le_bytes([w[4 * g], w[4 * g + 1], w[4 * g + 2], w[4 * g + 3]]);
        let (a, b) = (word(w0), word(w1));
        acc0 = smlad(sxtb16(a), words[0], acc0);
        acc0 = smlad(sxtb16_ror8(a), words[1], acc0);
        acc1 = smlad(sxtb16(b), words[0], acc1);
        acc1 = smlad(sxtb16_ror8(b), words[1], acc1);
    }
    [acc0, acc1]
}

/// What [`quad_filters`] computes: four pixels' quad patch of `taps` taps (the layout of
/// [`crate::kernels::dot`]: per group of four taps, each pixel's words `(x0, x2), (x1,
/// x3)` in turn), `filters` filters' int8 rows of `taps` bytes one after the other in
/// `weights` (any alignment), and `stride`, the distance in values between the pixels'
/// results (0: the four fold into one, a pool window).
#[derive(Debug, Clone, Copy)]
pub struct QuadConv<'a> {
    /// The quad patch.
    pub patch: &'a [u32],
    /// The filters' rows.
    pub weights: &'a [u8],
    /// Taps per patch.
    pub taps: usize,
    /// Filters.
    pub filters: usize,
    /// Values from one pixel's results to the next pixel's.
    pub stride: usize,
    /// The same rows widened ([`widen_filter`]), or empty. With them each group of four
    /// taps' weights is one `LDM` of two words instead of a load and two `SXTB16` for
    /// every four pixels; rows that do not fill `filters · wide_words(taps)` words are
    /// ignored (the int8 rows serve).
    pub wide: &'a [u32],
}

impl QuadConv<'_> {
    /// The widened rows, if they are there for every filter ([`widened_fit`]).
    fn widened(&self) -> Option<&[u32]> {
        let words = self.filters.checked_mul(wide_words(self.taps))?;
        self.wide
            .get(..words)
            .filter(|_| widened_fit(self.wide.len(), self.filters, self.taps))
    }

    /// Whether the sizes fit the slices and `values`: [`quad_filters`]' precondition.
    pub(crate) fn fits(&self, values: &[u32]) -> bool {
        self.fits_len(values.len())
    }

    /// [`Self::fits`] for `len` results (sums or bytes).
    fn fits_len(&self, len: usize) -> bool {
        let Self {
            patch,
            weights,
            taps,
            filters,
            stride,
            ..
        } = *self;
        taps > 0
            && filters > 0
            && patch.len() >= 4 * crate::kernels::dot::PatchWords::words(taps)
            && weights.len() / taps >= filters
            && len > 3 * stride + filters - 1
    }
}

/// One group of four taps of [`quad_filters`]' inner loops: the filter's four weights
/// unpacked into r7 (`w0, w2`) and r6 (`w1, w3`), the group's eight quad-patch words into
/// r2–r5 four at a time (`LDM`), eight `SMLAD`s into the four pixels' accumulators.
#[cfg(infer_core_dsp)]
macro_rules! quad_group {
    () => {
        concat!(
            "ldr r6, [r11], #4\n",
            "sxtb16 r7, r6\n",
            "sxtb16 r6, r6, ror #8\n",
            "ldm r10!, {{r2, r3, r4, r5}}\n",
            "smlad r0, r7, r2, r0\n",
            "smlad r0, r6, r3, r0\n",
            "smlad r1, r7, r4, r1\n",
            "smlad r1, r6, r5, r1\n",
            "ldm r10!, {{r2, r3, r4, r5}}\n",
            "smlad r8, r7, r2, r8\n",
            "smlad r8, r6, r3, r8\n",
            "smlad r9, r7, r4, r9\n",
            "smlad r9, r6, r5, r9\n",
        )
    };
}

/// [`quad_group`] with widened weights ([`widen_filter`]): the group's two weight words
/// straight into r6 (`w1, w3`) and r7 (`w0, w2`) by one `LDM`.
#[cfg(infer_core_dsp)]
macro_rules! quad_group_wide {
    () => {
        concat!(
            "ldm r11!, {{r6, r7}}\n",
            "ldm r10!, {{r2, r3, r4, r5}}\n",
            "smlad r0, r7, r2, r0\n",
            "smlad r0, r6, r3, r0\n",
            "smlad r1, r7, r4, r1\n",
            "smlad r1, r6, r5, r1\n",
            "ldm r10!, {{r2, r3, r4, r5}}\n",
            "smlad r8, r7, r2, r8\n",
            "smlad r8, r6, r3, r8\n",
            "smlad r9, r7, r4, r9\n",
            "smlad r9, r6, r5, r9\n",
        )
    };
}

/// One pixel's max update of [`quad_filters`]: `*r3 = max(*r3, acc)`, then `r3 += r2`.
#[cfg(infer_core_dsp)]
macro_rules! quad_max {
    ($acc:literal) => {
        concat!(
            "ldr r4, [r3]\n",
            "cmp ",
            $acc,
            ", r4\n",
            "it gt\n",
            "movgt r4, ",
            $acc,
            "\n",
            "str r4, [r3]\n",
            "add r3, r2\n",
        )
    };
}

/// One filter's taps of four pixels in [`quad_filters`]' assembly and
/// [`quad_filters_requant`]'s, into the sums r0 r1 r8 r9 (as they started), its weights' group
/// loads (`$group`, a macro like [`quad_group`]) and single-tap load into r6 (`$single`)
/// given: the int8 rows' or the widened rows'. The patch from [sp, #12]; the groups of four
/// taps run as a loop of eight, entered by `TBB` at the group that leaves a whole number of
/// passes ([sp, #8], low byte: 8 − groups mod 8, 0 for a multiple of 8, 8 for none) for
/// [sp, #16] passes; then the single taps (the next byte of [sp, #8]). Ends at label 7 with
/// the weights' pointer r11 at the next filter's row. (Entered so, the loop takes neither a
/// block of sixteen before it nor a loop of the groups left after it: 176 bytes of flash
/// less, and a 3 × 3 conv of one channel, two groups and a single tap, 7 instructions less
/// per filter and quad.)
#[cfg(infer_core_dsp)]
macro_rules! quad_taps {
    ($group:ident, $single:literal) => {
        concat!(
            "ldr r10, [sp, #12]\n",
            "ldr lr, [sp, #16]\n",
            "ldrb r2, [sp, #8]\n",
            "tbb [pc, r2]\n",
            "30:\n",
            ".byte (31f - 30b) / 2, (32f - 30b) / 2, (33f - 30b) / 2, (34f - 30b) / 2\n",
            ".byte (35f - 30b) / 2, (36f - 30b) / 2, (37f - 30b) / 2, (38f - 30b) / 2\n",
            ".byte (4f - 30b) / 2\n",
            ".p2align 1\n",
            "31:\n",
            $group!(),
            "32:\n",
            $group!(),
            "33:\n",
            $group!(),
            "34:\n",
            $group!(),
            "35:\n",
            $group!(),
            "36:\n",
            $group!(),
            "37:\n",
            $group!(),
            "38:\n",
            $group!(),
            "subs lr, lr, #1\n",
            "bne 31b\n",
            // The single taps: on most convs none, one test.
            "4:\n",
            "ldrb r2, [sp, #9]\n",
            "cbz r2, 7f\n",
            "mov lr, r2\n",
            "8:\n",
            $single,
            "\n",
            "ldm r10!, {{r2, r3, r4, r5}}\n",
            "mla r0, r2, r6, r0\n",
            "mla r1, r3, r6, r1\n",
            "mla r8, r4, r6, r8\n",
            "mla r9, r5, r6, r9\n",
            "subs lr, lr, #1\n",
            "bne 8b\n",
            "7:\n",
        )
    };
}

/// One sum's requantization in [`quad_filters_asm`]: the sum `$acc` (its bias in it)
/// clamped to 0..2^31 − 1, times the doubled multiplier r3 into r6 (low) r7 (high); the
/// doubling high multiply's rounding, the top bit of the low word, added (`ADDS` leaves C =
/// 0: the high word is below 2^31), so that `LSRS` by the shift r4 (`-shift`, 0..=31)
/// leaves the last bit shifted out in C (or C = 0 for a shift of 0), which `ADC` adds; the
/// zero point r5 added with saturation, the value saturated to int8, in r7: `relu_value`'s
/// steps, as `requantize_relu_dsp` takes them.
#[cfg(infer_core_dsp)]
macro_rules! relu_byte {
    ($acc:literal) => {
        concat!(
            "usat r6, #31, ",
            $acc,
            "\n",
            "umull r6, r7, r6, r3\n",
            "adds r7, r7, r6, lsr #31\n",
            "lsrs r7, r7, r4\n",
            "adc r7, r7, #0\n",
            "qadd r7, r7, r5\n",
            "ssat r7, #8, r7\n",
        )
    };
}

/// The doubling high multiply `(sum · m + 2^30) >> 31` of the sum `$acc` and the multiplier
/// `$m`, into `$hi` (`$lo` scratch): bits 31 and up of the product (`LSLS` leaves bit 31 of
/// the low word in C for `ADC`), plus its bit 30 (the nudge's carry). TFLite's doubling high
/// multiply of any sum and a multiplier ≥ 0, in four instructions.
#[cfg(infer_core_long_multiply)]
macro_rules! doubling_high {
    ($acc:literal, $m:literal, $lo:literal, $hi:literal) => {
        concat!(
            "smull ",
            $lo,
            ", ",
            $hi,
            ", ",
            $acc,
            ", ",
            $m,
            "\n",
            "lsls ",
            $lo,
            ", ",
            $lo,
            ", #1\n",
            "adc ",
            $hi,
            ", ",
            $hi,
            ", ",
            $hi,
            "\n",
            "add ",
            $hi,
            ", ",
            $hi,
            ", ",
            $lo,
            ", lsr #31\n",
        )
    };
}

/// The rounding division of r10 by `2^e`, ties away from zero (TFLite's), `e` the negated
/// shift in r12 clamped to 0..=31 as the reference clamps it: for `e` ≥ 1 one less for a
/// value below 0, so that `ASRS` rounds half up with the last bit shifted out, which it
/// leaves in C for an `ADC` to add; for `e` = 0 the value, C = 0 (`CMP`'s borrow, which
/// `ASRS` by 0 keeps).
#[cfg(infer_core_long_multiply)]
macro_rules! rounding_shift {
    () => {
        concat!(
            "rsb r12, r12, #0\n",
            "usat r12, #5, r12\n",
            "cmp r12, #1\n",
            "it hs\n",
            "addhs r10, r10, r10, asr #31\n",
            "asrs r10, r10, r12\n",
        )
    };
}

/// The rounding division of `$hi` (a doubling high product) by `2^$shift` (`$shift` 1..=31),
/// half away from zero: one less for a value below 0, so that `ASRS` rounds half up with
/// the last bit shifted out (C), which `ADC` adds with the zero point `$zp`; the value
/// saturated to int8, in `$out`. Four instructions, for the quads' whole-range
/// requantization ([`int8_byte`]) and the add's ([`add_into`]).
#[cfg(infer_core_long_multiply)]
macro_rules! rounded_int8 {
    ($hi:literal, $shift:literal, $zp:literal, $out:literal) => {
        concat!(
            "add ",
            $hi,
            ", ",
            $hi,
            ", ",
            $hi,
            ", asr #31\n",
            "asrs ",
            $hi,
            ", ",
            $hi,
            ", ",
            $shift,
            "\n",
            "adc ",
            $out,
            ", ",
            $hi,
            ", ",
            $zp,
            "\n",
            "ssat ",
            $out,
            ", #8, ",
            $out,
            "\n",
        )
    };
}

/// One sum's requantization in [`quad_filters_asm`] without a fused activation (the whole
/// int8 range): the [`doubling_high`] of the sum `$acc` (its bias in it) and the multiplier
/// r3, then for a shift r4 (`-shift`, 1..=31) [`rounded_int8`] with the zero point r5, in
/// r7: `requant::requantize`'s value in nine instructions. (A shift of 0 takes
/// [`int8_byte_unshifted`].)
#[cfg(infer_core_dsp)]
macro_rules! int8_byte {
    ($acc:literal) => {
        concat!(
            doubling_high!($acc, "r3", "r6", "r7"),
            rounded_int8!("r7", "r4", "r5", "r7"),
        )
    };
}

/// [`int8_byte`] for a shift of 0: the doubling high multiply, the zero point added with
/// saturation, the value saturated to int8, in r7.
#[cfg(infer_core_dsp)]
macro_rules! int8_byte_unshifted {
    ($acc:literal) => {
        concat!(
            doubling_high!($acc, "r3", "r6", "r7"),
            "qadd r7, r7, r5\n",
            "ssat r7, #8, r7\n",
        )
    };
}

/// The four bytes of one filter in [`quad_filters_asm`], each requantized by `$byte` (a
/// macro like [`relu_byte`]) and stored at r12 and on by the stride r2 (r10 scratch).
#[cfg(infer_core_dsp)]
macro_rules! quad_bytes {
    ($byte:ident) => {
        concat!(
            $byte!("r0"),
            "strb r7, [r12]\n",
            $byte!("r1"),
            "strb r7, [r12, r2]\n",
            "add.w r10, r12, r2, lsl #1\n",
            $byte!("r8"),
            "strb r7, [r10]\n",
            $byte!("r9"),
            "strb r7, [r10, r2]\n",
        )
    };
}

/// The whole int8 range's requantization of a filter's four sums in [`quad_filters_asm`]
/// (label 21, the mode 2): a shift clamped to 31 as the reference clamps it, one of 0 apart.
#[cfg(infer_core_dsp)]
macro_rules! int8_tail {
    () => {
        concat!(
            "21:\n",
            "usat r4, #5, r4\n",
            "cbnz r4, 22f\n",
            quad_bytes!(int8_byte_unshifted),
            "b 23b\n",
            "22:\n",
            quad_bytes!(int8_byte),
            "b 23b\n",
        )
    };
}

/// [`int8_tail`] left out (a block that never takes the mode 2): label 21 alone.
#[cfg(infer_core_dsp)]
macro_rules! no_int8_tail {
    () => {
        "21:\n"
    };
}

/// The assembly of [`quad_filters`] and [`quad_filters_requant`]: per filter [`quad_taps`] with
/// `$group` and `$single`, from sums at 0 that are then stored (or folded into a pool
/// window's maxima), or, given a ReLU's requantization (the last parameter 1), from sums
/// at the filter's bias that are then requantized ([`relu_byte`]) and stored as bytes.
/// `$loops` holds the stride in bytes, the groups and single taps after the blocks, the
/// patch and the blocks of sixteen taps; `$weights` is the rows' first byte or word, `$end`
/// their end; `$params` the requantization's bases, zero point and mode (0s without).
#[cfg(infer_core_dsp)]
macro_rules! quad_filters_asm {
    (
        $group:ident,
        $single:literal,
        $loops:ident,
        ($weights:expr, $end:expr),
        $params:ident,
        $out:expr,
        $int8:ident
    ) => {
        asm!(
            "push {{r6, r7}}",
            "push {{r3, r4, r5, r8, r9}}",
            "push {{r0, r1, r2, r10, lr}}",
            "cmp r1, #0",
            "bne.w 20f",
            // Each filter's four sums start at 0 (or at its bias: below).
            "3:",
            "movs r0, #0",
            "movs r1, #0",
            "mov.w r8, #0",
            "mov.w r9, #0",
            "17:",
            quad_taps!($group, $single),
            "ldr r2, [sp, #4]",
            "cbnz r2, 14f",
            "ldr r2, [sp, #36]",
            "mov r3, r12",
            "cbnz r2, 9f",
            // Stride 0 (a pool window): the four sums' max, then one running max.
            "cmp r0, r1",
            "it lt",
            "movlt r0, r1",
            "cmp r0, r8",
            "it lt",
            "movlt r0, r8",
            "cmp r0, r9",
            "it lt",
            "movlt r0, r9",
            quad_max!("r0"),
            "b 10f",
            // A stride (four pixels of their own): the sums stored.
            "9:",
            "str r0, [r3]",
            "str r1, [r3, r2]",
            "add.w r3, r3, r2, lsl #1",
            "str r8, [r3]",
            "str r9, [r3, r2]",
            // The next filter, until the weights' end (below it: a loop that ends whatever
            // it is given).
            "10:",
            "adds r12, #4",
            "ldr r2, [sp]",
            "cmp r11, r2",
            "blo 3b",
            "b 16f",
            // The requantization: the filter's multiplier (r3), its shift negated (r4), the
            // zero point (r5), the stride (r2); the four bytes stored. A ReLU's (1 at
            // [sp, #4]) with the multiplier doubled, the whole int8 range's (2) with the
            // shift at most 31 (as the reference takes it), one of 0 apart.
            // (r2: [sp, #4], the flags of its test kept to the branch.)
            "14:",
            "cmp r2, #1",
            "ldrd r3, r4, [sp, #24]",
            "ldr r3, [r3, r12, lsl #2]",
            "ldrsb r4, [r4, r12]",
            "rsb r4, r4, #0",
            "ldrd r5, r2, [sp, #32]",
            "bne 21f",
            "lsls r3, r3, #1",
            quad_bytes!(relu_byte),
            "23:",
            "adds r12, #1",
            "ldr r2, [sp]",
            "cmp r11, r2",
            "bhs 16f",
            // The next filter's four sums start at its bias.
            "20:",
            "ldr r2, [sp, #20]",
            "ldr r0, [r2, r12, lsl #2]",
            "mov r1, r0",
            "mov r8, r0",
            "mov r9, r0",
            "b 17b",
            $int8!(),
            "16:",
            "add sp, #40",
            "pop {{r6, r7}}",
            inout("r0") $end => _,
            inout("r1") $params.4 => _,
            inout("r2") $loops.1 => _,
            inout("r3") $params.0 => _,
            inout("r4") $params.1 => _,
            inout("r5") $params.2 => _,
            inout("r8") $params.3 => _,
            inout("r9") $loops.0 => _,
            inout("r10") $loops.2 => _,
            inout("lr") $loops.3 => _,
            inout("r11") $weights => _,
            inout("r12") $out => _,
        )
    };
}

/// Whether `wide_len` words of widened rows hold every one of `filters` filters of `taps`
/// taps: where [`quad_filters`] takes them.
pub fn widened_fit(wide_len: usize, filters: usize, taps: usize) -> bool {
    filters
        .checked_mul(wide_words(taps))
        .is_some_and(|words| words > 0 && wide_len >= words)
}

/// Four pixels' convolutions ([`QuadConv`]): for filter `f` and pixel `p`, the sum
/// `Σ x_p · w_f` (as `i32`) stored at `values[p · stride + f]`, or, with stride 0 (a pool
/// window), folded into the running max `values[f]`. Computes nothing if a size does not
/// fit.
///
/// On a DSP core this is one block of assembly: 32 taps of four pixels (128
/// multiply-accumulates) in 106 instructions — each weight word loaded and unpacked once for
/// the four pixels, the patch loaded four words per `LDM` — a loop of eight groups of four
/// taps entered where the groups' count leaves whole passes (13 instructions a group), then
/// the single taps (8 each), and about 25 per filter around them (about 36 for a pool
/// window, whose four sums go to one running max). With widened rows ([`QuadConv::wide`]) a
/// group's weights are one `LDM`: 90 instructions per block of 32 taps, 11 a group.
/// (MVE cores take convs of 6 taps or more through an int8 patch instead,
/// `mve::quad_filters_i8`); elsewhere [`quad_filters_portable`].
#[inline(always)]
pub fn quad_filters(conv: &QuadConv<'_>, values: &mut [u32]) {
    if conv.widened().is_some() {
        quad_filters_rows::<true>(conv, values);
    } else {
        quad_filters_rows::<false>(conv, values);
    }
}

/// [`quad_filters`] from the widened rows (`WIDE`; without them it computes nothing) or from
/// the int8 ones: the one a caller that knows which ([`crate::stack::facts::PREPARED_CONV`])
/// links alone.
#[inline(always)]
pub fn quad_filters_rows<const WIDE: bool>(conv: &QuadConv<'_>, values: &mut [u32]) {
    #[cfg(infer_core_dsp)]
    quad_block::<WIDE, false>(conv, (values.as_mut_ptr() as usize, values.len()), None);
    #[cfg(not(infer_core_dsp))]
    if !WIDE || conv.widened().is_some() {
        quad_filters_portable(conv, values);
    }
}

/// The block of assembly of [`quad_filters_rows`] (`rq` `None`: sums into the `len` `u32`
/// values at `out`) and [`quad_filters_requant_rows`] (into `len` bytes at `out`), where the
/// sizes fit ([`QuadConv::fits_len`], [`requant_quad_fits`]) and, with `WIDE`, the widened
/// rows are there (true); else nothing (false).
#[cfg(infer_core_dsp)]
#[inline(never)]
fn quad_block<const WIDE: bool, const INT8: bool>(
    conv: &QuadConv<'_>,
    (out, len): (usize, usize),
    rq: Option<&ChannelRequant<'_>>,
) -> bool {
    let fits = match rq {
        Some(rq) => requant_quad_fits(conv, rq, len) && (INT8 || rq.is_relu_to_127()),
        None => conv.fits_len(len),
    };
    if !fits || WIDE && conv.widened().is_none() {
        return false;
    }
    // Registers: accumulators of pixels 0–3 in r0 r1 r8 r9; patch words r2–r5; the
    // unpacked weights r6 r7; the patch pointer r10, the weight pointer r11, the output
    // pointer r12 (the next filter's sum, or byte, of the first pixel; pixel p's is
    // p · stride values on), the loop count lr. On the stack (pushed from r0–r5, r8, r10,
    // lr): the weights' end [sp] (the filters' loop ends when r11 reaches it), at [sp, #4]
    // 1 for a ReLU's requantization, 2 for the whole int8 range's, without one 0, the group
    // the loop of eight groups is entered at (low byte) and the single taps after the
    // groups (next byte) [sp, #8], the patch [sp, #12], the loop's passes [sp, #16]; with a
    // requantization, the biases' [sp, #20], the multipliers' [sp, #24] and the shifts'
    // [sp, #28] bases, each less its stride times the output's address, so that filter f's
    // parameter is at base + 4 · r12 (base + r12 for a shift), the zero point [sp, #32]
    // (0 without); the stride in bytes [sp, #36] (beside the zero point: one `LDRD`).
    let (params, size) = match rq {
        Some(rq) => {
            let base = |params: &[u8], size: usize| {
                (params.as_ptr() as usize).wrapping_sub(out.wrapping_mul(size))
            };
            let params = (
                base(rq.bias, 4),
                base(rq.multiplier, 4),
                base(rq.shift, 1),
                rq.output_offset,
                if rq.is_relu_to_127() { 1 } else { 2 },
            );
            (params, 1)
        }
        None => ((0, 0, 0, 0, 0), 4),
    };
    let taps = conv.taps;
    // The group the loop of eight is entered at (8: none) and its passes ([`quad_taps`]).
    let groups = taps / 4;
    let entry = if groups == 0 { 8 } else { (8 - groups % 8) % 8 };
    let loops = (
        size * conv.stride,
        entry | taps % 4 << 8,
        conv.patch.as_ptr(),
        groups.div_ceil(8),
    );
    // SAFETY: r10 reads the 4 · PatchWords::words(taps) words of `patch` per filter
    // (checked by the caller, `QuadConv::fits_len`; word-aligned, which LDM needs), r11
    // reads taps bytes of `weights` per filter (filters · taps checked) or, with widened
    // rows, wide_words(taps) words of `wide` per filter (filters · wide_words(taps) checked
    // by `widened`; a `u32` slice is word-aligned, which LDM needs); r12 reads and writes
    // the values at p · stride + f (words), or writes the bytes there, for p < 4, f <
    // filters (checked: `out` holds more than 3 · stride + filters − 1 of them), and with a
    // requantization reads filter f's bias and multiplier words (unaligned loads may be, on
    // these cores) and its shift byte (each array covers the filters, checked by
    // `ChannelRequant::covers`): base + 4 · r12 is the parameter's address modulo 2^32.
    // Each loop count is tested for 0 before its loop, and r11 steps by a whole row per
    // filter (taps > 0), so that it meets the end after `filters` ≥ 1 of them. The twelve
    // registers that can be operands are all named here (r2–r5 by name also because LDM
    // needs its registers in ascending order), so no operand is in r6 or r7 (which cannot
    // be named: LLVM's base and frame pointers); the block saves those two on the stack,
    // uses them as scratch and restores them, and pops everything it pushes. Nothing else
    // is read or written, and every register written is declared.
    // The block with the whole int8 range's requantization (`INT8`) or without it.
    macro_rules! block {
        ($group:ident, $single:literal, ($weights:expr, $end:expr)) => {
            if INT8 {
                unsafe {
                    quad_filters_asm!(
                        $group,
                        $single,
                        loops,
                        ($weights, $end),
                        params,
                        out,
                        int8_tail
                    )
                }
            } else {
                unsafe {
                    quad_filters_asm!(
                        $group,
                        $single,
                        loops,
                        ($weights, $end),
                        params,
                        out,
                        no_int8_tail
                    )
                }
            }
        };
    }
    match conv.widened() {
        Some(wide) if WIDE => block!(
            quad_group_wide,
            "ldr r6, [r11], #4",
            (
                wide.as_ptr(),
                wide.as_ptr().wrapping_add(conv.filters * wide_words(taps))
            )
        ),
        _ if !WIDE => block!(
            quad_group,
            "ldrsb r6, [r11], #1",
            (
                conv.weights.as_ptr(),
                conv.weights.as_ptr().wrapping_add(conv.filters * taps)
            )
        ),
        _ => return false,
    }
    true
}

/// [`quad_filters`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn quad_filters_portable(conv: &QuadConv<'_>, values: &mut [u32]) {
    if !conv.fits(values) {
        return;
    }
    for (f, acc) in filter_sums(conv).enumerate() {
        for (p, acc) in acc.into_iter().enumerate() {
            put_sum(values, p * conv.stride + f, conv.stride, acc);
        }
    }
}

/// Each filter's four pixel sums of [`quad_filters_portable`], in order.
fn filter_sums<'c>(conv: &'c QuadConv<'_>) -> impl Iterator<Item = [i32; 4]> + 'c {
    let taps = conv.taps;
    let (grouped, tail) = conv
        .patch
        .split_at_checked(taps / 4 * 8)
        .unwrap_or_default();
    let per_filter = wide_words(taps);
    (0..conv.filters).map(move |f| {
        // The filter's words as the assembly loads them: widened, or widened here.
        match conv.widened() {
            Some(wide) => {
                let row = wide.get(f * per_filter..).unwrap_or_default();
                quad_sums(row.iter().copied(), grouped, tail, taps)
            }
            None => {
                let row = conv.weights.get(f * taps..).unwrap_or_default();
                quad_sums(wide_filter_words(row, taps), grouped, tail, taps)
            }
        }
    })
}

/// Whether [`quad_filters_requant`] can run: the conv fits `len` bytes of output, and `rq`
/// has parameters for every filter and is a ReLU's requantization up to 127 (its floor the
/// zero point, in int8) or one without a fused activation (the whole int8 range).
pub fn requant_quad_fits(conv: &QuadConv<'_>, rq: &ChannelRequant<'_>, len: usize) -> bool {
    conv.fits_len(len) && (rq.is_relu_to_127() || rq.is_whole_int8()) && rq.covers(conv.filters)
}

/// [`quad_filters`] with the requantization `rq` ([`requant_quad_fits`]: a ReLU's up to 127,
/// or the whole int8 range): for filter `f` and pixel `p`, the sum `Σ x_p · w_f` with its
/// bias, requantized as [`requantize_relu`] or [`requantize_int8`] requantize it, into
/// `out[p · stride + f]` (the pixels in order: with stride 0, the last pixel's value). For
/// a monotonic requantization (multipliers ≥ 0, shifts ≤ 0; other parameters give
/// unspecified values, never a panic). True if it computed them; nothing if
/// [`requant_quad_fits`] does not hold.
///
/// On DSP cores [`quad_filters`]' block of assembly: its loops with each filter's four sums
/// starting from its bias, then each one's requantization (seven instructions for a ReLU's,
/// nine for the whole range's) and its store, about 25 per filter around them, where
/// storing the sums and requantizing them after took some 15 a value for a ReLU's and 27
/// for the whole range's (the stages take it where the core has no MVE, whose
/// requantization takes four channels at a time); elsewhere
/// [`quad_filters_requant_portable`].
#[inline(always)]
pub fn quad_filters_requant(conv: &QuadConv<'_>, rq: &ChannelRequant<'_>, out: &mut [i8]) -> bool {
    if conv.widened().is_some() {
        quad_filters_requant_rows::<true, true>(conv, rq, out)
    } else {
        quad_filters_requant_rows::<false, true>(conv, rq, out)
    }
}

/// [`quad_filters_requant`] from the widened rows (`WIDE`; without them it computes nothing)
/// or from the int8 ones, as [`quad_filters_rows`], with the whole int8 range's
/// requantization compiled in (`INT8`) or only a ReLU's (a stage whose facts fix a ReLU
/// floor links no more): true if it computed them ([`requant_quad_fits`], a ReLU's without
/// `INT8`, and with `WIDE` the widened rows there).
#[inline(always)]
pub fn quad_filters_requant_rows<const WIDE: bool, const INT8: bool>(
    conv: &QuadConv<'_>,
    rq: &ChannelRequant<'_>,
    out: &mut [i8],
) -> bool {
    #[cfg(infer_core_dsp)]
    return quad_block::<WIDE, INT8>(conv, (out.as_mut_ptr() as usize, out.len()), Some(rq));
    #[cfg(not(infer_core_dsp))]
    {
        let fits = (!WIDE || conv.widened().is_some())
            && requant_quad_fits(conv, rq, out.len())
            && (INT8 || rq.is_relu_to_127());
        if fits {
            quad_filters_requant_portable(conv, rq, out);
        }
        fits
    }
}

/// [`quad_filters_requant`] in plain integer arithmetic: [`quad_filters_portable`]'s sums,
/// each with its bias requantized as [`requantize_relu_portable`] requantizes it (a ReLU's)
/// or as TFLite does ([`ChannelRequant::apply`], the whole int8 range).
pub fn quad_filters_requant_portable(conv: &QuadConv<'_>, rq: &ChannelRequant<'_>, out: &mut [i8]) {
    if !requant_quad_fits(conv, rq, out.len()) {
        return;
    }
    let relu = rq.is_relu_to_127();
    for (f, acc) in filter_sums(conv).enumerate() {
        let Some((bias, multiplier, shift)) = rq.channel(f) else {
            return;
        };
        for (p, acc) in acc.into_iter().enumerate() {
            if let Some(o) = out.get_mut(p * conv.stride + f) {
                let acc = acc.wrapping_add(bias);
                *o = if relu {
                    relu_value(rq, acc, multiplier, shift)
                } else {
                    rq.apply(acc, multiplier, shift)
                };
            }
        }
    }
}

/// One filter's four sums of [`quad_filters_portable`] from its widened row (`words`,
/// [`wide_filter_words`]), the quad patch's groups (`grouped`) and single taps (`tail`).
fn quad_sums(
    mut words: impl Iterator<Item = u32>,
    grouped: &[u32],
    tail: &[u32],
    taps: usize,
) -> [i32; 4] {
    let mut acc = [0i32; 4];
    for group in grouped.chunks_exact(8) {
        let (odd, even) = (words.next().unwrap_or(0), words.next().unwrap_or(0));
        for (p, acc) in acc.iter_mut().enumerate() {
            *acc = smlad(odd, group[2 * p + 1], smlad(even, group[2 * p], *acc));
        }
    }
    for (pixels, w) in tail.chunks_exact(4).take(taps % 4).zip(words) {
        for (acc, &x) in acc.iter_mut().zip(pixels) {
            *acc = acc.wrapping_add((x as i32).wrapping_mul(w as i32));
        }
    }
    acc
}

/// Words of one filter's row of `taps` int8 weights widened for [`quad_filters`]
/// ([`widen_filter`]).
pub const fn wide_words(taps: usize) -> usize {
    taps / 4 * 2 + taps % 4
}

/// One filter's row of `taps` int8 weights (`row`, at least `taps` bytes) as
/// [`quad_filters`] loads it widened: per group of four taps the words `(w1, w3)` and
/// `(w0, w2)` of 16-bit halves (what `SXTB16` makes of the group's word, rotated by 8 and
/// not), then each single tap sign-extended to a word. [`wide_words`] words.
pub fn wide_filter_words(row: &[u8], taps: usize) -> impl Iterator<Item = u32> + '_ {
    let row = row.get(..taps).unwrap_or_default();
    let (groups, singles) = row.split_at(row.len() / 4 * 4);
    groups
        .chunks_exact(4)
        .flat_map(|g| {
            let [even, odd] = group_halves(g);
            [odd, even]
        })
        .chain(singles.iter().map(|&b| i32::from(b as i8) as u32))
}

/// Four int8 weights (`group`, at least 4 bytes; 0 if shorter) as `SXTB16` unpacks their
/// word: `[(w0, w2), (w1, w3)]` as 16-bit halves, what both widened layouts are made of.
fn group_halves(group: &[u8]) -> [u32; 2] {
    let w = group
        .get(..4)
        .map_or(0, |w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
    [sxtb16(w), sxtb16_ror8(w)]
}

/// Writes `filters` int8 rows of `taps` weights (`weights`) widened for [`quad_filters`]
/// ([`wide_filter_words`]) into `wide`, which takes `filters · wide_words(taps)` words.
/// Returns `false`, writing nothing, if a slice is too short.
pub fn widen_filter(weights: &[u8], taps: usize, filters: usize, wide: &mut [u32]) -> bool {
    let words = filters.saturating_mul(wide_words(taps));
    if taps == 0 || weights.len() / taps < filters || wide.len() < words {
        return false;
    }
    let rows = weights.chunks_exact(taps).take(filters);
    for (out, w) in wide
        .iter_mut()
        .zip(rows.flat_map(|r| wide_filter_words(r, taps)))
    {
        *out = w;
    }
    true
}

/// Whether `wide` holds exactly `filters` int8 rows of `taps` weights (`weights`) widened
/// ([`widen_filter`]): what a model's prepared weights must be to be used.
pub fn is_widened(weights: &[u8], taps: usize, filters: usize, wide: &[u32]) -> bool {
    taps > 0
        && weights.len() / taps >= filters
        && wide.len() == filters.saturating_mul(wide_words(taps))
        && weights
            .chunks_exact(taps)
            .take(filters)
            .flat_map(|r| wide_filter_words(r, taps))
            .eq(wide.iter().copied())
}

/// What [`dense_rows`] computes: one position's `channels` values packed as
/// [`crate::kernels::dot::pack_patch`] packs them (`patch`), and the dense layer's weight
/// rows from that position on: row `u` is `weights[u · stride..][..channels]` (int8
/// bytes, any alignment).
#[derive(Debug, Clone, Copy)]
pub struct DenseRows<'a> {
    /// The packed values.
    pub patch: &'a [u32],
    /// The rows, from the position's first input on.
    pub weights: &'a [u8],
    /// Values of the position: a multiple of 8.
    pub channels: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
}

impl DenseRows<'_> {
    /// Whether the sizes fit the slices and `acc` (whole pairs of units): [`dense_rows`]'
    /// precondition.
    pub(crate) fn fits(&self, acc: &[u32]) -> bool {
        self.fits_groups(acc, 8, 2)
    }

    /// Whether the values are whole groups of `values` (at least one) and `acc`'s whole
    /// groups of `units` units (at least one) fit the slices.
    fn fits_groups(&self, acc: &[u32], values: usize, units: usize) -> bool {
        let units = acc.len() / units * units;
        self.channels >= values
            && self.channels % values == 0
            && self.stride >= self.channels
            && units > 0
            && self.patch.len() >= self.channels / 2
            && self.weights.len() >= (units - 1) * self.stride + self.channels
    }
}

/// One octet of taps of [`dense_rows`]' inner loop for the unit in `$acc` with row pointer
/// `$row`: two weight words, each unpacked into r9 (`w0, w2`) and r8 (`w1, w3`), four
/// `SMLAD`s with the patch words in r2–r5.
#[cfg(infer_core_dsp)]
macro_rules! dense_octet {
    ($acc:literal, $row:literal) => {
        concat!(
            "ldr r8, [",
            $row,
            "], #4\n",
            "sxtb16 r9, r8\n",
            "sxtb16 r8, r8, ror #8\n",
            "smlad ",
            $acc,
            ", r9, r2, ",
            $acc,
            "\n",
            "smlad ",
            $acc,
            ", r8, r3, ",
            $acc,
            "\n",
            "ldr r8, [",
            $row,
            "], #4\n",
            "sxtb16 r9, r8\n",
            "sxtb16 r8, r8, ror #8\n",
            "smlad ",
            $acc,
            ", r9, r4, ",
            $acc,
            "\n",
            "smlad ",
            $acc,
            ", r8, r5, ",
            $acc,
            "\n",
        )
    };
}

/// A streamed dense layer's step ([`DenseRows`]): adds each unit's dot product of the
/// position's values with its row into `acc` (one per unit; an odd last unit is left
/// alone), wrapping. Computes nothing if a size does not fit.
///
/// On a DSP core this is one block of assembly: eight taps of two units in 23
/// instructions (each patch word loaded once for both), 14 per pair of units around them
/// (MVE cores take the int8 values as they are instead, `mve::dense_rows_i8`); elsewhere
/// [`dense_rows_portable`].
#[inline(never)]
pub fn dense_rows(rows: &DenseRows<'_>, acc: &mut [u32]) {
    if !rows.fits(acc) {
        return;
    }
    #[cfg(infer_core_dsp)]
    {
        // Registers: the two units' sums in r0 r1; patch words r2–r5; the unpacked weights
        // r8 r9; the patch pointer r10, the two row pointers r11 r12, the octet count lr.
        // On the stack (pushed from r0–r3, r10): pairs left [sp], the accumulator pointer
        // [sp, #4], the step from a row's end to the row after next [sp, #8], octets per
        // position [sp, #12], the patch [sp, #16].
        // SAFETY: r10 reads channels / 2 words of `patch` per pair (checked above;
        // word-aligned, which LDM needs), r11 and r12 read `channels` bytes of rows 2i and
        // 2i + 1 (the last row ends within `weights`, checked above; LDR of a word may be
        // unaligned on these cores), [sp, #4] walks `acc` two words per pair (checked above,
        // word-aligned, which LDRD and STRD need), lr counts channels / 8 ≥ 1 octets down.
        // Every register used is named and declared; the block pops what it pushes, and
        // reads and writes nothing else.
        unsafe {
            asm!(
                "push {{r0, r1, r2, r3, r10}}",
                "3:",
                "ldr r10, [sp, #16]",
                "ldr lr, [sp, #12]",
                "ldr r2, [sp, #4]",
                "ldrd r0, r1, [r2]",
                "2:",
                "ldm r10!, {{r2, r3, r4, r5}}",
                dense_octet!("r0", "r11"),
                dense_octet!("r1", "r12"),
                "subs lr, lr, #1",
                "bne 2b",
                "ldr r2, [sp, #4]",
                "strd r0, r1, [r2], #8",
                "str r2, [sp, #4]",
                "ldr r2, [sp, #8]",
                "add r11, r2",
                "add r12, r2",
                "ldr r2, [sp]",
                "subs r2, #1",
                "str r2, [sp]",
                "bne 3b",
                "add sp, #20",
                inout("r0") acc.len() / 2 => _,
                inout("r1") acc.as_mut_ptr() => _,
                inout("r2") 2 * rows.stride - rows.channels => _,
                inout("r3") rows.channels / 8 => _,
                inout("r10") rows.patch.as_ptr() => _,
                inout("r11") rows.weights.as_ptr() => _,
                inout("r12") rows.weights.as_ptr().wrapping_add(rows.stride) => _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("lr") _,
            );
        }
    }
    #[cfg(not(infer_core_dsp))]
    dense_rows_portable(rows, acc);
}

/// [`dense_rows`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dense_rows_portable(rows: &DenseRows<'_>, acc: &mut [u32]) {
    if !rows.fits(acc) {
        return;
    }
    add_row_sums(rows, acc, acc.len() / 2 * 2);
}

/// Whether the sizes fit [`dense_quads`]: whole 32s of values, and whole quads of units
/// within `weights`.
fn quads_fit(rows: &DenseRows<'_>, acc: &[u32]) -> bool {
    rows.fits_groups(acc, 32, 4)
}

/// One group of four taps of [`dense_quads`]' inner loop for the units in `$lo` (row
/// pointer `$row`) and `$hi` (the row after it, `$row + r12`): one weight word each,
/// unpacked into r9 (`w0, w2`) and r8 (`w1, w3`), two `SMLAD`s each with the patch words
/// in r4 r5; `$row` steps on by the word.
#[cfg(infer_core_dsp)]
macro_rules! quad_group {
    ($lo:literal, $hi:literal, $row:literal) => {
        concat!(
            "ldr r8, [",
            $row,
            ", r12]\n",
            "sxtb16 r9, r8\n",
            "smlad ",
            $hi,
            ", r9, r4, ",
            $hi,
            "\n",
            "sxtb16 r8, r8, ror #8\n",
            "smlad ",
            $hi,
            ", r8, r5, ",
            $hi,
            "\n",
            "ldr r8, [",
            $row,
            "], #4\n",
            "sxtb16 r9, r8\n",
            "smlad ",
            $lo,
            ", r9, r4, ",
            $lo,
            "\n",
            "sxtb16 r8, r8, ror #8\n",
            "smlad ",
            $lo,
            ", r8, r5, ",
            $lo,
            "\n",
        )
    };
}

/// Four taps of the four units of [`dense_quads`]: the two patch words, then units 0 and 1
/// (rows r11, r11 + r12) and 2 and 3 (rows lr, lr + r12).
#[cfg(infer_core_dsp)]
macro_rules! quad_taps {
    () => {
        concat!(
            "ldrd r4, r5, [r10], #8\n",
            quad_group!("r0", "r1", "r11"),
            quad_group!("r2", "r3", "lr"),
        )
    };
}

/// [`dense_rows`] four units at a time, for values in whole 32s: adds each unit's dot
/// product into `acc` (one per unit; units past the last whole quad are left alone),
/// wrapping. Computes nothing if a size does not fit (fewer than 32 values or not a
/// multiple of 32, fewer than four units, short slices).
///
/// On a DSP core one block of assembly: 32 values of four units (128
/// multiply-accumulates) in 171 instructions (each pair of patch words loaded once for the
/// four units: 21 per four values, 3 for the loop end), 13 per quad of units around them;
/// elsewhere [`dense_quads_portable`].
#[inline(never)]
pub fn dense_quads(rows: &DenseRows<'_>, acc: &mut [u32]) {
    if !quads_fit(rows, acc) {
        return;
    }
    #[cfg(infer_core_dsp)]
    {
        let patch = rows.patch.as_ptr();
        // Registers: the four units' sums r0–r3; patch words r4 r5; the unpacked weights r8
        // r9; the patch pointer r10; the rows of units 0 and 2 r11 and lr (units 1 and 3
        // at r12 bytes after them). On the stack (pushed from r0–r4): the patch's end [sp],
        // its start [sp, #4], the accumulator pointer [sp, #8], quads left [sp, #12], the
        // step from where row 0's pointer ends to the next quad's row 0 [sp, #16].
        // SAFETY: per quad, r10 reads the channels / 2 words of `patch` (checked above,
        // word-aligned as LDRD needs), r11, r11 + r12, lr and lr + r12 read `channels`
        // bytes of rows 4i to 4i + 3 (the last row ends within `weights`, checked above;
        // LDR of a word may be unaligned on these cores), [sp, #8] walks `acc` four words
        // per quad (checked above, word-aligned as LDM/STM need); the inner loop runs
        // channels / 32 ≥ 1 times. The block pops the five words it pushes; every register
        // it writes is declared.
        unsafe {
            asm!(
                "push {{r0, r1, r2, r3, r4}}",
                "3:",
                "ldr r10, [sp, #4]",
                "ldr r8, [sp, #8]",
                "ldm r8, {{r0, r1, r2, r3}}",
                "2:",
                quad_taps!(),
                quad_taps!(),
                quad_taps!(),
                quad_taps!(),
                quad_taps!(),
                quad_taps!(),
                quad_taps!(),
                quad_taps!(),
                "ldr r9, [sp]",
                "cmp r10, r9",
                "bne 2b",
                "ldr r8, [sp, #8]",
                "stm r8!, {{r0, r1, r2, r3}}",
                "str r8, [sp, #8]",
                "ldr r8, [sp, #16]",
                "add r11, r8",
                "add lr, r8",
                "ldr r8, [sp, #12]",
                "subs r8, #1",
                "str r8, [sp, #12]",
                "bne 3b",
                "add sp, #20",
                inout("r0") patch.wrapping_add(rows.channels / 2) => _,
                inout("r1") patch => _,
                inout("r2") acc.as_mut_ptr() => _,
                inout("r3") acc.len() / 4 => _,
                inout("r4") 4 * rows.stride - rows.channels => _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                inout("r11") rows.weights.as_ptr() => _,
                in("r12") rows.stride,
                inout("lr") rows.weights.as_ptr().wrapping_add(2 * rows.stride) => _,
            );
        }
    }
    #[cfg(not(infer_core_dsp))]
    dense_quads_portable(rows, acc);
}

/// Words of a dense layer's rows widened for [`dense_quads_widened`] and
/// [`dense_widened_i8`]: its whole quads of units and, where two units are left after them,
/// that pair (`units / 2 · 2` rows of `inputs`, a multiple of 4), as 16-bit halves, two
/// words per four weights.
pub const fn dense_wide_words(inputs: usize, units: usize) -> usize {
    units / 2 * 2 * (inputs / 4 * 2)
}

/// A dense layer's `units` rows of `inputs` int8 weights (`weights`, `inputs` a multiple of
/// 4) as [`dense_quads_widened`] and [`dense_widened_i8`] load them: per quad of units, per
/// group of four inputs, each unit's `(w0, w2)` and `(w1, w3)` (what `SXTB16` makes of the
/// group's word, and of it rotated by 8); then the pair of units after the last whole quad,
/// if there is one, the same way ([`dense_wide_words`] words; an odd last unit is not
/// widened). Then each unit's offset term for the input offset `offset`
/// ([`row_offset_terms`], `units` words), which [`dense_widened_i8`]'s sums start from:
/// what a DSP core's build prepares beside the model.
pub fn dense_wide_words_of(
    weights: &[u8],
    inputs: usize,
    units: usize,
    offset: i32,
) -> impl Iterator<Item = u32> + '_ {
    let groups = inputs / 4;
    let pair = (units % 4 >= 2).then_some((units / 4 * 4, 2));
    let blocks = (0..units / 4).map(|q| (4 * q, 4)).chain(pair);
    let rows = blocks.flat_map(move |(first, count)| {
        (0..groups).flat_map(move |g| {
            (first..first + count).flat_map(move |u| {
                group_halves(weights.get(u * inputs + 4 * g..).unwrap_or_default())
            })
        })
    });
    rows.chain(row_offset_terms(weights, inputs, offset).take(units))
}

/// One group of four inputs of [`dense_quads_widened`]: the two patch words into r4 r5,
/// then units 0 and 1's widened weights (r6–r9, one `LDM`) and units 2 and 3's.
#[cfg(infer_core_dsp)]
macro_rules! dense_group_wide {
    () => {
        concat!(
            "ldrd r4, r5, [r10], #8\n",
            "ldm r11!, {{r6, r7, r8, r9}}\n",
            "smlad r0, r6, r4, r0\n",
            "smlad r0, r7, r5, r0\n",
            "smlad r1, r8, r4, r1\n",
            "smlad r1, r9, r5, r1\n",
            "ldm r11!, {{r6, r7, r8, r9}}\n",
            "smlad r2, r6, r4, r2\n",
            "smlad r2, r7, r5, r2\n",
            "smlad r3, r8, r4, r3\n",
            "smlad r3, r9, r5, r3\n",
        )
    };
}

/// Whether [`dense_quads_widened`]'s sizes fit: whole sixteens of inputs (at least one),
/// the packed patch, at least one quad of units in `acc` and its widened rows, each quad's
/// `quad_words` (at least `2 · inputs`) after the one before.
fn widened_quads_fit(
    patch: &[u32],
    wide: &[u32],
    (inputs, quad_words): (usize, usize),
    acc: &[u32],
) -> bool {
    let quads = acc.len() / 4;
    inputs >= 16
        && inputs % 16 == 0
        && patch.len() >= inputs / 2
        && quads > 0
        && quad_words >= 2 * inputs
        && (quads - 1)
            .checked_mul(quad_words)
            .and_then(|w| w.checked_add(2 * inputs))
            .is_some_and(|words| wide.len() >= words)
}

/// [`dense_quads`] from widened rows ([`dense_wide_words_of`], `wide` from the first quad
/// of `acc`'s units on): adds each unit's dot product of the packed `patch` (`inputs`
/// values, [`crate::kernels::dot::pack_patch`]'s layout) into `acc`, whole quads of units
/// (the units after them are left alone), wrapping. A quad's `2 · inputs` words are
/// `quad_words` after the quad's before: `2 · inputs` where the patch is the layer's whole
/// input, the layer's `2 · inputs` where it is one position's of a streamed layer (`wide`
/// then from that position's first word on, twice its first input). Computes nothing if a
/// size does not fit (fewer than 16 inputs or not a multiple of 16, short slices).
///
/// On a DSP core one block of assembly: sixteen inputs of four units (64
/// multiply-accumulates) in 46 instructions (per four inputs the two patch words in one
/// `LDRD`, the four units' eight weight words in two `LDM`s, eight `SMLAD`s), 11 per quad
/// of units around them; elsewhere [`dense_quads_widened_portable`].
#[inline(never)]
pub fn dense_quads_widened(
    patch: &[u32],
    wide: &[u32],
    (inputs, quad_words): (usize, usize),
    acc: &mut [u32],
) {
    if !widened_quads_fit(patch, wide, (inputs, quad_words), acc) {
        return;
    }
    #[cfg(infer_core_dsp)]
    {
        // Registers: the four units' sums r0–r3; patch words r4 r5; the widened weights
        // r6–r9; the patch pointer r10, its end r12; the widened rows' pointer r11; quads
        // left lr. On the stack (pushed from r0–r2): the accumulator pointer [sp], the
        // patch [sp, #4], the bytes from a quad's last widened word to the next's first
        // [sp, #8].
        // SAFETY: per quad, r10 reads the inputs / 2 words of `patch` (checked above;
        // word-aligned, as LDRD needs) up to r12, r11 reads 2 · inputs words of `wide`,
        // quad q's from word q · quad_words on ((quads − 1) · quad_words + 2 · inputs
        // checked above; a `u32` slice is word-aligned, as LDM needs),
        // [sp] walks `acc` four words per quad (checked above, word-aligned as LDM/STM
        // need); the inner loop runs inputs / 16 ≥ 1 times. r6 and r7 (which cannot be
        // named) are saved on the stack and restored; the block pops everything it pushes,
        // reads and writes nothing else, and every register it writes is declared.
        unsafe {
            asm!(
                "push {{r6, r7}}",
                "push {{r0, r1, r2}}",
                "3:",
                "ldr r10, [sp, #4]",
                "ldr r8, [sp]",
                "ldm r8, {{r0, r1, r2, r3}}",
                "2:",
                dense_group_wide!(),
                dense_group_wide!(),
                dense_group_wide!(),
                dense_group_wide!(),
                "cmp r10, r12",
                "bne 2b",
                "ldr r8, [sp]",
                "stm r8!, {{r0, r1, r2, r3}}",
                "str r8, [sp]",
                "ldr r9, [sp, #8]",
                "add r11, r11, r9",
                "subs lr, #1",
                "bne 3b",
                "add sp, #12",
                "pop {{r6, r7}}",
                inout("r0") acc.as_mut_ptr() => _,
                inout("r1") patch.as_ptr() => _,
                inout("r2") 4 * (quad_words - 2 * inputs) => _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                inout("r11") wide.as_ptr() => _,
                in("r12") patch.as_ptr().wrapping_add(inputs / 2),
                inout("lr") acc.len() / 4 => _,
            );
        }
    }
    #[cfg(not(infer_core_dsp))]
    dense_quads_widened_portable(patch, wide, (inputs, quad_words), acc);
}

/// [`dense_quads_widened`] in plain integer arithmetic (the reference the assembly is
/// tested against, and the code elsewhere).
pub fn dense_quads_widened_portable(
    patch: &[u32],
    wide: &[u32],
    (inputs, quad_words): (usize, usize),
    acc: &mut [u32],
) {
    if !widened_quads_fit(patch, wide, (inputs, quad_words), acc) {
        return;
    }
    let groups = inputs / 4;
    for (q, quad) in acc.chunks_exact_mut(4).enumerate() {
        let Some(words) = wide.get(q * quad_words..).and_then(|w| w.get(..8 * groups)) else {
            return;
        };
        let mut sums = [0i32; 4];
        for (x, w) in patch.chunks_exact(2).zip(words.chunks_exact(8)) {
            for (j, sum) in sums.iter_mut().enumerate() {
                *sum = smlad(w[2 * j + 1], x[1], smlad(w[2 * j], x[0], *sum));
            }
        }
        for (a, sum) in quad.iter_mut().zip(sums) {
            *a = a.wrapping_add(sum as u32);
        }
    }
}

/// One pair of units of [`dense_widened_i8`] over a group of four int8 values widened into
/// the registers `$lo` (values 0 and 2) and `$hi` (1 and 3): the pair's widened weights
/// (r6–r9, one `LDM`) into its sums r0 r1, as [`dense_group_wide`] takes them.
#[cfg(infer_core_dsp)]
macro_rules! dense_pair_i8 {
    ($lo:literal, $hi:literal) => {
        concat!(
            "ldm r11!, {{r6, r7, r8, r9}}\n",
            "smlad r0, r6, ",
            $lo,
            ", r0\n",
            "smlad r0, r7, ",
            $hi,
            ", r0\n",
            "smlad r1, r8, ",
            $lo,
            ", r1\n",
            "smlad r1, r9, ",
            $hi,
            ", r1\n",
        )
    };
}

/// [`dense_pair_i8`] for a quad of units (sums r0–r3): units 0 and 1, then 2 and 3.
#[cfg(infer_core_dsp)]
macro_rules! dense_quad_i8 {
    ($lo:literal, $hi:literal) => {
        concat!(
            dense_pair_i8!($lo, $hi),
            "ldm r11!, {{r6, r7, r8, r9}}\n",
            "smlad r2, r6, ",
            $lo,
            ", r2\n",
            "smlad r2, r7, ",
            $hi,
            ", r2\n",
            "smlad r3, r8, ",
            $lo,
            ", r3\n",
            "smlad r3, r9, ",
            $hi,
            ", r3\n",
        )
    };
}

/// Eight int8 values of [`dense_widened_i8`] for the units of `$units` ([`dense_pair_i8`]
/// or [`dense_quad_i8`]): one `LDRD` of the values (r4 r5), each word widened in two
/// `SXTB16`s (into r4 and lr) and taken by the units.
#[cfg(infer_core_dsp)]
macro_rules! dense_octet_i8 {
    ($units:ident) => {
        concat!(
            "ldrd r4, r5, [r10], #8\n",
            "sxtb16 lr, r4, ror #8\n",
            "sxtb16 r4, r4\n",
            $units!("r4", "lr"),
            "sxtb16 lr, r5, ror #8\n",
            "sxtb16 r4, r5\n",
            $units!("r4", "lr"),
        )
    };
}

/// Whether [`dense_widened_i8`]'s sizes fit: whole sixteens of inputs (at least one), the
/// values word-aligned (for `LDRD`), at least two units in `acc`, and their widened rows
/// and offset terms.
fn widened_i8_fit(
    values: &[i8],
    (wide, terms): (&[u32], &[u32]),
    inputs: usize,
    acc: &[u32],
) -> bool {
    let units = acc.len() / 2 * 2;
    inputs >= 16
        && inputs % 16 == 0
        && values.len() >= inputs
        && values.as_ptr() as usize % 4 == 0
        && units >= 2
        && units <= wide.len() / (inputs / 2)
        && terms.len() >= units
}

/// A dense layer over its int8 input from the rows the build widened and its offset terms
/// ([`dense_wide_words_of`]; `wide` and `terms` from the first of `acc`'s units on, a
/// multiple of 4): writes each unit of `acc` its offset term plus its row's dot product with
/// the `inputs` values as they are (wrapping): the unit's sum of `w · (x + offset)`. Whole
/// quads of units, then a pair; an odd last unit is left alone. Returns whether it computed
/// them: nothing if a size does not fit (fewer than 16 inputs or not a multiple of 16, the
/// values not word-aligned, fewer than two units, short slices).
///
/// Unlike [`dense_quads_widened`], the input needs no packed copy (no working memory): each
/// quad widens every group of four values again, in two `SXTB16` (the offset is in the
/// terms), the values loaded eight at a time. On a DSP core two blocks of assembly: sixteen
/// inputs of four units (64 multiply-accumulates) in 52 instructions, 11 per quad around
/// them; sixteen of a pair in 32; elsewhere [`dense_widened_i8_portable`].
#[inline(never)]
pub fn dense_widened_i8(
    values: &[i8],
    (wide, terms): (&[u32], &[u32]),
    inputs: usize,
    acc: &mut [u32],
) -> bool {
    if !widened_i8_fit(values, (wide, terms), inputs, acc) {
        return false;
    }
    #[cfg(infer_core_dsp)]
    {
        let quads = acc.len() / 4;
        let end = values.as_ptr().wrapping_add(inputs);
        if quads > 0 {
            // Registers: the four units' sums r0–r3; the values' words r4 r5, widened into
            // r4 and lr; the widened weights r6–r9; the values' pointer r10, their end r12;
            // the widened rows' pointer r11. On the stack (pushed from r0–r3): the
            // accumulator pointer [sp], the values [sp, #4], quads left [sp, #8], the
            // offset terms' pointer [sp, #12].
            // SAFETY: per quad, r10 reads the `inputs` bytes of `values` (checked above,
            // word-aligned as LDRD needs) up to r12; r11 reads 2 · inputs words of `wide`
            // per quad, the quads one after the other (checked above; a `u32` slice is
            // word-aligned, as LDM needs); [sp, #12] walks `terms` and [sp] `acc`, four
            // words per quad (checked above, word-aligned as LDM/STM need); the inner loop
            // runs inputs / 16 ≥ 1 times, the outer quads ≥ 1. r6 and r7 (which cannot be
            // named) are saved on the stack and restored; the block pops everything it
            // pushes, reads and writes nothing else, and every register it writes is
            // declared.
            unsafe {
                asm!(
                    "push {{r6, r7}}",
                    "push {{r0, r1, r2, r3}}",
                    "3:",
                    "ldr r10, [sp, #4]",
                    "ldr r8, [sp, #12]",
                    "ldm r8!, {{r0, r1, r2, r3}}",
                    "str r8, [sp, #12]",
                    "2:",
                    dense_octet_i8!(dense_quad_i8),
                    dense_octet_i8!(dense_quad_i8),
                    "cmp r10, r12",
                    "bne 2b",
                    "ldr r8, [sp]",
                    "stm r8!, {{r0, r1, r2, r3}}",
                    "str r8, [sp]",
                    "ldr r8, [sp, #8]",
                    "subs r8, #1",
                    "str r8, [sp, #8]",
                    "bne 3b",
                    "add sp, #16",
                    "pop {{r6, r7}}",
                    inout("r0") acc.as_mut_ptr() => _,
                    inout("r1") values.as_ptr() => _,
                    inout("r2") quads => _,
                    inout("r3") terms.as_ptr() => _,
                    out("r4") _,
                    out("r5") _,
                    out("r8") _,
                    out("r9") _,
                    out("r10") _,
                    inout("r11") wide.as_ptr() => _,
                    in("r12") end,
                    out("lr") _,
                );
            }
        }
        if acc.len() % 4 >= 2 {
            let sums = acc.as_mut_ptr().wrapping_add(4 * quads);
            let terms = terms.as_ptr().wrapping_add(4 * quads);
            let rows = wide.as_ptr().wrapping_add(quads * 2 * inputs);
            // Registers as above, the pair's sums r0 r1, its accumulator pointer r2, its
            // offset terms' pointer r3.
            // SAFETY: r10 reads the `inputs` bytes of `values` up to r12 (as above); r11
            // reads the pair's 2 · inputs words of `wide`, after the quads' (checked above);
            // r3 and r2 point at the pair's two words of `terms` and `acc` (checked above;
            // LDRD/STRD: word-aligned); the loop runs inputs / 16 ≥ 1 times. r6 and r7 are
            // saved and restored as above; every register written is declared.
            unsafe {
                asm!(
                    "push {{r6, r7}}",
                    "ldrd r0, r1, [r3]",
                    "2:",
                    dense_octet_i8!(dense_pair_i8),
                    dense_octet_i8!(dense_pair_i8),
                    "cmp r10, r12",
                    "bne 2b",
                    "strd r0, r1, [r2]",
                    "pop {{r6, r7}}",
                    out("r0") _,
                    out("r1") _,
                    in("r2") sums,
                    in("r3") terms,
                    out("r4") _,
                    out("r5") _,
                    out("r8") _,
                    out("r9") _,
                    inout("r10") values.as_ptr() => _,
                    inout("r11") rows => _,
                    in("r12") end,
                    out("lr") _,
                );
            }
        }
    }
    #[cfg(not(infer_core_dsp))]
    dense_widened_i8_portable(values, (wide, terms), inputs, acc);
    true
}

/// [`dense_widened_i8`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dense_widened_i8_portable(
    values: &[i8],
    (wide, terms): (&[u32], &[u32]),
    inputs: usize,
    acc: &mut [u32],
) -> bool {
    if !widened_i8_fit(values, (wide, terms), inputs, acc) {
        return false;
    }
    let groups = inputs / 4;
    let widened = |g: &[i8]| {
        let [a, b, c, d] = g.first_chunk::<4>().map_or([0; 4], |g| g.map(i32::from));
        [pack(a, c), pack(b, d)]
    };
    let units = acc.len() / 2 * 2;
    let (mut first, mut rows) = (0, wide);
    while first < units {
        let count = if units - first >= 4 { 4 } else { 2 };
        let Some((block, rest)) = rows.split_at_checked(2 * count * groups) else {
            return false;
        };
        let mut sums = [0i32; 4];
        for (sum, &term) in sums.iter_mut().zip(terms.iter().skip(first)) {
            *sum = term as i32;
        }
        for (g, w) in values.chunks_exact(4).zip(block.chunks_exact(2 * count)) {
            let [lo, hi] = widened(g);
            for (sum, w) in sums.iter_mut().zip(w.chunks_exact(2)) {
                *sum = smlad(w[1], hi, smlad(w[0], lo, *sum));
            }
        }
        let quad = acc.iter_mut().skip(first).take(count);
        for (a, sum) in quad.zip(sums) {
            *a = sum as u32;
        }
        first += count;
        rows = rest;
    }
    true
}

/// [`dense_quads`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dense_quads_portable(rows: &DenseRows<'_>, acc: &mut [u32]) {
    if !quads_fit(rows, acc) {
        return;
    }
    add_row_sums(rows, acc, acc.len() / 4 * 4);
}

/// Adds to each of the first `units` of `acc` its row's dot product with the packed
/// values (sizes already checked).
fn add_row_sums(rows: &DenseRows<'_>, acc: &mut [u32], units: usize) {
    for (u, acc) in acc.iter_mut().take(units).enumerate() {
        let row = rows.weights.get(u * rows.stride..).unwrap_or_default();
        let row = row.get(..rows.channels).unwrap_or_default();
        let mut sum = 0i32;
        for (words, w) in rows.patch.chunks_exact(2).zip(row.chunks_exact(4)) {
            let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            sum = smlad(sxtb16_ror8(w), words[1], smlad(sxtb16(w), words[0], sum));
        }
        *acc = acc.wrapping_add(sum as u32);
    }
}

/// [`windows`] in plain integer arithmetic (the reference the assembly is tested against,
/// and the code elsewhere).
pub fn windows_portable<const F: usize>(po: &mut PatchOut<F>, filters: &[Filter3x3; F]) {
    for (f, out) in filters.iter().zip(&mut po.out) {
        let m = window_sums(&po.patch, f).into_iter().max().unwrap_or(0);
        *out = if m <= 0 {
            0
        } else {
            let product = crate::requant::wide_product(m as u32, f.multiplier as u32);
            let x = ((product + (1 << 30)) >> 31) as u32;
            let r = f.right_shift() & 31;
            (x + ((1 << r) >> 1)) >> r
        };
    }
}

/// Filter `f`'s four window accumulators `bias + Σ x·w` over `patch` (left and right
/// windows of the top row, then of the bottom row), in plain integer arithmetic.
pub fn window_sums(patch: &Patch, f: &Filter3x3) -> [i32; 4] {
    let [e0, o0, e1, o1, e2, o2, e3, o3, l0, r0, l1, r1] = *patch;
    let dot = |a: u32, b: u32| lo(a) * lo(b) + hi(a) * hi(b);
    let [p0, p1, p2, m01, m2] = f.pairs;
    let w21 = lo(m2);
    [
        dot(e0, p0) + dot(e1, p1) + dot(e2, p2) + dot(l0, m01) + lo(o2) * w21,
        dot(o0, p0) + dot(o1, p1) + dot(o2, p2) + dot(r0, m01) + hi(e2) * w21,
        dot(e1, p0) + dot(e2, p1) + dot(e3, p2) + dot(l1, m01) + lo(o3) * w21,
        dot(o1, p0) + dot(o2, p1) + dot(o3, p2) + dot(r1, m01) + hi(e3) * w21,
    ]
    .map(|s| f.bias.wrapping_add(s))
}

/// Requantizes whole positions of accumulators (`values`: `channels` `i32` per position,
/// as `u32` bits, without their bias) to int8 values: value `i` into `out[i]`, or with `out`
/// `None` narrowed in place into byte `i` of `values`' memory ([`int8_of_words`]; the bytes
/// past them unspecified), for a monotonic requantization (every
/// shift ≤ 0; multipliers are ≥ 0 in any valid model) whose clamp floor is at or above the
/// output zero point (a ReLU): a sum ≤ 0 is the activation minimum, a positive one is
/// scaled in unsigned arithmetic (`requant::scale_positive`), offset and clamped —
/// [`ChannelRequant::apply`]'s value. A shift > 0 gives other (unspecified) values, never a
/// panic; channels past the parameters give −128.
///
/// A loop of assembly on DSP cores and the Cortex-M3 (it needs only `UMLAL`, `USAT` and
/// `SSAT`) when the floor is the zero point itself and the ceiling 127 (18 instructions
/// per positive sum on DSP cores, 19 on the Cortex-M3, 8 per other; MVE cores take every right-shift requantization through
/// [`super::mve::requantize_right`]), other clamps there through
/// [`ChannelRequant::apply`] value by value; elsewhere [`requantize_relu_portable`].
#[inline(always)]
pub fn requantize_relu(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
    #[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
    {
        if relu_fits(rq, values, channels, out.as_deref()) {
            requantize_relu_dsp(rq, values, channels, out);
        } else {
            // The general way (the same values), which the other requantizations fall back
            // to as well: one fallback linked, not two (550 B on the Cortex-M4F).
            rq.requantize_each(values, channels, out);
        }
    }
    #[cfg(not(all(infer_core_long_multiply, not(infer_core_mve))))]
    requantize_relu_portable(rq, values, channels, out);
}

/// Whether [`requantize_relu`]'s assembly can run: whole positions of at least one channel,
/// a byte in `out` (if any) for each of their values, parameters for every channel, the
/// floor at the zero point (in `-128..=127`), ceiling 127.
#[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
pub(crate) fn relu_fits(
    rq: &ChannelRequant<'_>,
    values: &[u32],
    channels: usize,
    out: Option<&[i8]>,
) -> bool {
    rq.positions_fit(values, channels, out) && rq.is_relu_to_127()
}

/// [`requantize_relu_dsp`]'s zero point added (r5) to the scaled value (r8, ≥ 0) so that
/// `SSAT` then clamps the sum to int8: with saturation (`QADD`) on DSP cores; else the value
/// first clamped to 255 (`USAT`), enough for any zero point in int8.
#[cfg(all(infer_core_dsp, not(infer_core_mve)))]
macro_rules! offset_clamped {
    () => {
        "qadd r8, r8, r5"
    };
}
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! offset_clamped {
    () => {
        "usat r8, #8, r8\nadd r8, r8, r5"
    };
}

/// A loop of assembly over whole positions of accumulators: each value's sum read and its
/// bias added into r8, then `$body` (which leaves the int8 value in r8, or branches to a
/// label of `$cold`, which the loop enters only by those branches), the byte stored; the
/// loop of [`requantize_relu`] and [`requantize_int8`] (their functions return early if
/// `channels` is 0).
///
/// Registers: the next sum r0 and the next byte r11 (both running on over the positions),
/// the ends of the biases r1, multipliers r2 and shifts r3, the channel r4 (counting up
/// from −channels to 0, an offset from those ends), the zero point r5, r8–r10 and r12 for
/// `$body`, the channels lr; positions left on the stack. Value `i`'s byte is at or before
/// its sum's word, which is read first: the narrowing in place overwrites only sums
/// already read.
#[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
macro_rules! requantize_loop {
    ($rq:expr, $values:expr, $channels:expr, $out:expr, [$($body:tt)*], [$($cold:tt)*]) => {{
        let (rq, values, channels, out): (&ChannelRequant<'_>, &mut [u32], usize, Option<&mut [i8]>) =
            ($rq, $values, $channels, $out);
        // Positions, without a division the compiler cannot prove safe (the caller checked
        // `channels` > 0; `checked_div` keeps the panic path out of the binary anyway).
        let Some(positions) = values.len().checked_div(channels) else {
            return;
        };
        // The bytes: `out`'s, or `values`' own.
        let bytes = match out {
            Some(out) => out.as_mut_ptr(),
            None => values.as_mut_ptr().cast::<i8>(),
        };
        // SAFETY: for each of `values.len() / channels` (≥ 1) positions, it reads the
        // position's `channels` words of `values` in order and writes as many bytes from
        // the start of `out`, or of `values` (at or before the words, read first), on
        // (within them, checked by the caller, `ChannelRequant::positions_fit`; words
        // word-aligned), and reads words i < `channels` of the biases and the multipliers
        // and byte i of the shifts (each at least `channels` long, checked, so the ends
        // passed lie within or one past them; word loads may be unaligned on these cores).
        // It pushes one word and pops it, and declares every register it writes.
        unsafe {
            asm!(
                "push {{r9}}",
                "3:",
                "rsb r4, lr, #0",
                "2:",
                "ldr r8, [r0], #4",
                "ldr r9, [r1, r4, lsl #2]",
                "add r8, r8, r9",
                $($body)*
                "strb r8, [r11], #1",
                "adds r4, r4, #1",
                "bne 2b",
                $($cold)*
                "ldr r9, [sp]",
                "subs r9, r9, #1",
                "str r9, [sp]",
                "bne 3b",
                "add sp, #4",
                inout("r0") values.as_ptr() => _,
                in("r1") rq.bias.as_ptr().wrapping_add(4 * channels),
                in("r2") rq.multiplier.as_ptr().wrapping_add(4 * channels),
                in("r3") rq.shift.as_ptr().wrapping_add(channels),
                out("r4") _,
                in("r5") rq.output_offset,
                out("r8") _,
                inout("r9") positions => _,
                out("r10") _,
                inout("r11") bytes => _,
                out("r12") _,
                inout("lr") channels => _,
            );
        }
    }};
}

/// [`requantize_relu`]'s assembly, where `relu_fits` (the zero point r5 is the floor).
#[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
#[inline(never)]
fn requantize_relu_dsp(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
    // A sum ≤ 0 is the floor (out of line). Else `scale_positive`'s two roundings in fewer
    // steps: with the sum doubled, the high word of `2 · sum · m + 2^31` is
    // `(sum · m + 2^30) >> 31`, and `(x + 2^(r−1)) >> r` is `x >> r` plus bit `r − 1` of
    // `x`, the carry `LSRS` leaves (a shift by 0 leaves the carry alone, and `LSLS` of a
    // positive sum cleared it).
    requantize_loop!(
        rq,
        values,
        channels,
        out,
        [
            "cmp r8, #0",
            "ble 4f",
            "ldr r12, [r2, r4, lsl #2]",
            // 2 · sum (< 2^32), C = 0 (its top bit); r10 = (2 · sum · m + 2^31) >> 32,
            // the doubling high multiply: the product's high word plus the top bit of its
            // low word.
            "lsls r8, r8, #1",
            "umull r9, r10, r8, r12",
            "add r10, r10, r9, lsr #31",
            "ldrsb r12, [r3, r4]",
            // The rounding shift: r10 >> −shift plus the last bit shifted out (C, still 0
            // for a shift of 0).
            "rsb r12, r12, #0",
            "lsrs r8, r10, r12",
            "adc r8, r8, #0",
            offset_clamped!(),
            "ssat r8, #8, r8",
        ],
        [
            "b 5f",
            "4:",
            "strb r5, [r11], #1",
            "adds r4, r4, #1",
            "bne 2b",
            "5:",
        ]
    );
}

/// [`requantize_relu`] in plain Rust (the reference the assembly is tested against, and
/// the code on other cores).
#[inline(never)]
pub fn requantize_relu_portable(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
    rq.map_positions(values, channels, out, |acc, m, s| {
        relu_value(rq, acc, word(m) as i32, i32::from(s))
    });
}

/// One sum `acc` (its bias added) of a ReLU's requantization `rq` with `multiplier` and
/// `shift`, as [`requantize_relu`] and [`quad_filters_requant`] give it: the floor for a sum ≤ 0,
/// else the sum scaled ([`crate::requant::scale_positive`]), the zero point added, clamped.
#[inline(always)]
fn relu_value(rq: &ChannelRequant<'_>, acc: i32, multiplier: i32, shift: i32) -> i8 {
    let (offset, min, max) = (rq.output_offset, rq.activation_min, rq.activation_max);
    let value = if acc <= 0 {
        min
    } else {
        let scaled = crate::requant::scale_positive(acc, multiplier, shift) as u32;
        (scaled.min(255) as i32 + offset).min(max).max(min)
    };
    value as i8
}

/// Requantizes whole positions of accumulators as [`requantize_relu`] does (into `out`, or
/// narrowed in place), each sum with its bias through [`ChannelRequant::apply`], for a
/// monotonic requantization (every shift ≤ 0, multipliers ≥ 0; callers check) whose clamp
/// is the whole int8 range (no fused activation: a conv before an add). A shift > 0 or a
/// multiplier < 0 gives other (unspecified) values, never a panic.
///
/// A loop of assembly on the Cortex-M3 and DSP cores where the sizes fit (whole positions,
/// parameters for every channel, a byte in `out` for each value): each sum's
/// `doubling_high` multiply and `rounding_shift`, the zero point added and the value
/// saturated to int8, in 22 instructions (26 from the sum's magnitude, some 70 through
/// `requantize_each` on the Cortex-M4F); elsewhere `requantize_each`.
#[inline(always)]
pub fn requantize_int8(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
    #[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
    if int8_fits(rq, values, channels, out.as_deref()) {
        requantize_int8_asm(rq, values, channels, out);
        return;
    }
    rq.requantize_each(values, channels, out);
}

/// Whether [`requantize_int8`]'s assembly can run: as [`relu_fits`], the clamp the whole
/// int8 range.
#[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
fn int8_fits(rq: &ChannelRequant<'_>, values: &[u32], channels: usize, out: Option<&[i8]>) -> bool {
    rq.positions_fit(values, channels, out) && rq.activation_min == -128 && rq.activation_max == 127
}

/// [`super::add::AddTables::add_into`]'s assembly on the Cortex-M3 and DSP cores (not MVE,
/// whose own loop is `mve::add_into`): each value of `values` added to the byte of `other`
/// at its place, in place, over the shorter of the two, from the tables `ta` and `tb` of
/// each input's scaled values (256 words each, indexed by the value's byte) and the output
/// requantization of `p`: the [`doubling_high`] multiply, the rounding division as
/// [`int8_byte`] takes it, the zero point added,
/// the clamp. 19 instructions a value with a ReLU's clamp, where scaling the magnitude
/// (`requant::scale_right`'s way) took 32 and the requantization in Rust some 50. False
/// (nothing done) where it cannot run: tables shorter than 256 words, a shift outside `-31..=-1` or a zero point
/// outside int8.
#[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
#[inline(never)]
pub(crate) fn add_into(
    ta: &[u32],
    tb: &[u32],
    p: &super::add::AddParams,
    values: &[i8],
    other: &mut [i8],
) -> bool {
    let zero_point = p.output_zero_point;
    if ta.len() < 256
        || tb.len() < 256
        || !(-31..=-1).contains(&p.output_shift)
        || !(-128..=127).contains(&zero_point)
    {
        return false;
    }
    let n = values.len().min(other.len());
    if n == 0 {
        return true;
    }
    // The clamp after the zero point is added (the scaled sum is below 2^30 in magnitude:
    // no overflow): to int8 by `SSAT`, then up to the floor r6 and down to the ceiling r7
    // where they are not the int8 range's ends (a ReLU's floor: two compares fewer).
    let bounds = [i32::from(p.min), i32::from(p.max)];
    // Registers: the values r0, the other operand r1 and its end r4, the tables r2 r3, the
    // zero point r5, the bounds r6 r7 (loaded from r8), the multiplier r11 and the shift
    // `-shift` lr; per value its sum in r8, its product in r9 (low) r10 (high).
    // SAFETY: the loop runs `n` (≥ 1) times: it reads `n` bytes of `values` and reads and
    // writes `n` bytes of `other` (both at least `n` long, `r1` up to `r4`), reads words
    // 0..=255 of `ta` and `tb` (a byte loaded as the index; both at least 256 words, checked
    // above, word-aligned) and the two words of `bounds`. r6 and r7 (which cannot be named)
    // are saved on the stack and restored; every other register written is declared.
    macro_rules! add_loop {
        ($($clamp:literal),*) => {
            unsafe {
                asm!(
                    "push {{r6, r7}}",
                    "ldrd r6, r7, [r8]",
                    "2:",
                    "ldrb r8, [r0], #1",
                    "ldrb r9, [r1]",
                    "ldr r8, [r2, r8, lsl #2]",
                    "ldr r9, [r3, r9, lsl #2]",
                    "add r8, r8, r9",
                    doubling_high!("r8", "r11", "r9", "r10"),
                    // The rounding division by 2^lr, ties away from zero; the zero point.
                    rounded_int8!("r10", "lr", "r5", "r8"),
                    $($clamp,)*
                    "strb r8, [r1], #1",
                    "cmp r1, r4",
                    "bne 2b",
                    "pop {{r6, r7}}",
                    inout("r0") values.as_ptr() => _,
                    inout("r1") other.as_mut_ptr() => _,
                    in("r2") ta.as_ptr(),
                    in("r3") tb.as_ptr(),
                    in("r4") other.as_ptr().wrapping_add(n),
                    in("r5") zero_point,
                    inout("r8") bounds.as_ptr() => _,
                    out("r9") _,
                    out("r10") _,
                    in("r11") p.output_multiplier,
                    in("lr") -p.output_shift,
                )
            }
        };
    }
    match (p.min, p.max) {
        (-128, 127) => add_loop!(),
        (_, 127) => add_loop!("cmp r8, r6", "it lt", "movlt r8, r6"),
        _ => add_loop!(
            "cmp r8, r6",
            "it lt",
            "movlt r8, r6",
            "cmp r8, r7",
            "it gt",
            "movgt r8, r7"
        ),
    }
    true
}

/// [`requantize_int8`]'s assembly, where `int8_fits`.
#[cfg(all(infer_core_long_multiply, not(infer_core_mve)))]
#[inline(never)]
fn requantize_int8_asm(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
    // The sum's doubling high multiply by its channel's multiplier, rounded by its shift
    // (`rounding_shift`); the value saturated to 9 bits (SSAT keeps C), plus the rounding
    // bit and the zero point, saturated to 8: the saturating sum's value, whatever the
    // magnitude.
    requantize_loop!(
        rq,
        values,
        channels,
        out,
        [
            "ldr r12, [r2, r4, lsl #2]",
            doubling_high!("r8", "r12", "r9", "r10"),
            "ldrsb r12, [r3, r4]",
            rounding_shift!(),
            "ssat r10, #9, r10",
            "adc r8, r10, r5",
            "ssat r8, #8, r8",
        ],
        []
    );
}

/// [`super::dense::logits_of`] for a model's logits layer, whose requantization loading
/// checked (multipliers ≥ 0, shifts in `-31..=0`, output zero point 0; other parameters
/// give other, unspecified, values, never a panic): the same wide logits.
///
/// A loop of assembly on the Cortex-M3 and DSP cores (20 instructions a logit, some 40
/// through `logits_of`): each sum's doubling high multiply and rounding division as
/// [`requantize_int8`] takes them; elsewhere `logits_of`.
#[inline(always)]
pub fn logits_right(rq: &ChannelRequant<'_>, acc: &[u32], logits: &mut [i32]) {
    #[cfg(infer_core_long_multiply)]
    {
        let n = logits.len().min(acc.len()).min(rq.shift.len());
        let n = n.min(rq.bias.len() / 4).min(rq.multiplier.len() / 4);
        if n > 0 {
            logits_right_asm(rq, acc, &mut logits[..n]);
        }
    }
    #[cfg(not(infer_core_long_multiply))]
    super::dense::logits_of(rq, acc, logits);
}

/// [`logits_right`]'s assembly, for `logits.len()` (≥ 1) logits whose sums and parameters
/// the caller checked are there.
#[cfg(infer_core_long_multiply)]
#[inline(never)]
fn logits_right_asm(rq: &ChannelRequant<'_>, acc: &[u32], logits: &mut [i32]) {
    // Registers: the sums r0, biases r1, multipliers r2, shifts r3 and logits r11 walking
    // on, the logits left lr; per logit the sum r8, the multiplier and then the shift r12,
    // the product r9 (low) r10 (high).
    // SAFETY: the loop runs `logits.len()` (≥ 1) times, reading that many words of `acc`,
    // of the biases and the multipliers (word loads may be unaligned on these cores) and
    // bytes of the shifts, and writing that many words of `logits`: the caller checked
    // each is at least that long. It touches no stack and declares every register it
    // writes.
    unsafe {
        asm!(
            "2:",
            "ldr r8, [r0], #4",
            "ldr r9, [r1], #4",
            "add r8, r8, r9",
            "ldr r12, [r2], #4",
            doubling_high!("r8", "r12", "r9", "r10"),
            "ldrsb r12, [r3], #1",
            rounding_shift!(),
            "adc r8, r10, #0",
            "str r8, [r11], #4",
            "subs lr, lr, #1",
            "bne 2b",
            inout("r0") acc.as_ptr() => _,
            inout("r1") rq.bias.as_ptr() => _,
            inout("r2") rq.multiplier.as_ptr() => _,
            inout("r3") rq.shift.as_ptr() => _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            inout("r11") logits.as_mut_ptr() => _,
            out("r12") _,
            inout("lr") logits.len() => _,
            options(nostack),
        );
    }
}

/// Whether `groups` groups fit `run` (four values each) and `patch` (two words, `step`
/// words apart): the assembly of [`pack_groups`] runs only then.
#[cfg(infer_core_dsp)]
fn pack_fits(run: &[i8], patch: &[u32], step: usize, groups: usize) -> bool {
    groups > 0 && step >= 2 && run.len() / 4 >= groups && patch.len() >= step * (groups - 1) + 2
}

/// Writes `groups` groups of four values, `run[t] + offset` for the first `4 · groups`
/// values of `run` (`offset` in `-128..=128`), into `patch` as
/// [`crate::kernels::dot::pack_patch`] packs them (`(x0, x2), (x1, x3)` per group), the
/// groups `step` words apart (2: a packed patch; 8: one pixel's share of a quad patch).
/// Groups past the end of `run` or `patch` are dropped.
///
/// A loop of assembly on DSP cores (nine instructions per group: one word load, two
/// `SXTB16`, two `SADD16`, one `STRD`, the step, the loop end) and MVE cores (the
/// `kernels::mve` loop, eight values in five instructions); elsewhere
/// [`pack_groups_portable`].
#[inline(always)]
pub fn pack_groups(run: &[i8], offset: i32, patch: &mut [u32], step: usize, groups: usize) {
    #[cfg(infer_core_dsp)]
    if pack_fits(run, patch, step, groups) {
        #[cfg(infer_core_mve)]
        super::mve::pack_groups_mve(run, offset, patch, step, groups);
        #[cfg(not(infer_core_mve))]
        pack_groups_dsp(run, offset, patch, step, groups);
        return;
    }
    pack_groups_portable(run, offset, patch, step, groups);
}

/// The loop of [`pack_groups`]' and [`pack_pixel_groups`]' DSP assembly: `{n}` groups of
/// four int8 values from `{run}` (which steps past them), each widened (`SXTB16`), offset
/// (`SADD16` with `{offsets}`) and stored as two words at `{patch}` (which steps
/// `{advance}` bytes a group); `{x}`, `{a}` and `{b}` scratch.
#[cfg(all(infer_core_dsp, not(infer_core_mve)))]
macro_rules! pack_loop {
    () => {
        concat!(
            "2:\n",
            "ldr {x}, [{run}], #4\n",
            "sxtb16 {a}, {x}\n",
            "sxtb16 {b}, {x}, ror #8\n",
            "sadd16 {a}, {a}, {offsets}\n",
            "sadd16 {b}, {b}, {offsets}\n",
            "strd {a}, {b}, [{patch}]\n",
            "add {patch}, {advance}\n",
            "subs {n}, #1\n",
            "bne 2b\n",
        )
    };
}

/// [`pack_groups`]' DSP assembly, for sizes that fit (`pack_fits`).
#[cfg(all(infer_core_dsp, not(infer_core_mve)))]
#[inline(never)]
fn pack_groups_dsp(run: &[i8], offset: i32, patch: &mut [u32], step: usize, groups: usize) {
    // SAFETY: the loop runs `groups` times (≥ 1, checked by the caller, `pack_fits`); it
    // reads the first `4 · groups` bytes of `run` (word loads, aligned or not: Armv7E-M
    // loads unaligned words) and writes words `k · step` and `k · step + 1` of `patch` for
    // k < groups, within it (checked by the caller; `STRD` to a word-aligned `u32` buffer
    // that nothing else borrows). It touches no stack; every register it writes is declared.
    unsafe {
        asm!(
            pack_loop!(),
            run = inout(reg) run.as_ptr() => _,
            patch = inout(reg) patch.as_mut_ptr() => _,
            n = inout(reg) groups => _,
            offsets = in(reg) pack(offset, offset),
            advance = in(reg) 4 * step,
            x = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack),
        );
    }
}

/// [`pack_groups`] for `count` runs at once (a quad's pixels along one kernel row): run `k`
/// from byte `k · pixel_step` of `run` into `patch` from word `2k` on, each `groups` groups
/// `step` words apart. Nothing is written unless every run and group fits.
///
/// One loop of assembly on DSP cores without MVE (nine instructions per group, as
/// [`pack_groups`], and four per run), where a call of [`pack_groups`] per run, with the
/// slicing around it, took some 80 instructions more a run of resnet-tiny's 3 × 3 × 8
/// convs on the Cortex-M4F; elsewhere [`pack_pixel_groups_portable`].
#[inline(always)]
pub fn pack_pixel_groups(
    run: &[i8],
    offset: i32,
    patch: &mut [u32],
    (step, groups): (usize, usize),
    (count, pixel_step): (usize, usize),
) {
    if !pixel_groups_fit(run.len(), patch.len(), (step, groups), (count, pixel_step)) {
        return;
    }
    #[cfg(all(infer_core_dsp, not(infer_core_mve)))]
    // SAFETY: `count` ≥ 1 runs of `groups` ≥ 1 groups (checked above). Run `k` reads bytes
    // `k · pixel_step .. k · pixel_step + 4 · groups` of `run` (word loads, aligned or not:
    // Armv7E-M loads unaligned words; the pointer steps `4 · groups` through the run, then
    // `pixel_step - 4 · groups`, wrapping), within it for the last run (checked), so for
    // every one; it writes words `2k + j · step` and `2k + j · step + 1` of `patch` for
    // j < groups (the pointer steps `4 · step` bytes a group, then back `4 · step · groups
    // - 8`), within it for the last run (checked), so for every one (`STRD` to a
    // word-aligned `u32` buffer that nothing else borrows). It touches no stack; every
    // register it writes is declared.
    unsafe {
        asm!(
            "3:",
            "mov {n}, {groups}",
            pack_loop!(),
            "add {run}, {run_skip}",
            "sub {patch}, {rewind}",
            "subs lr, #1",
            "bne 3b",
            run = inout(reg) run.as_ptr() => _,
            patch = inout(reg) patch.as_mut_ptr() => _,
            groups = in(reg) groups,
            n = out(reg) _,
            offsets = in(reg) pack(offset, offset),
            advance = in(reg) 4 * step,
            run_skip = in(reg) pixel_step.wrapping_sub(4 * groups),
            rewind = in(reg) (4 * step * groups).wrapping_sub(8),
            inout("lr") count => _,
            x = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(all(infer_core_dsp, not(infer_core_mve))))]
    for k in 0..count {
        let run = run.get(k * pixel_step..).unwrap_or_default();
        pack_groups(
            run,
            offset,
            patch.get_mut(2 * k..).unwrap_or_default(),
            step,
            groups,
        );
    }
}

/// Whether [`pack_pixel_groups`] packs: at least one run of at least one group, `step` ≥ 2,
/// the last run within `run` bytes and its last group within `patch` words, no overflow.
fn pixel_groups_fit(
    run: usize,
    patch: usize,
    (step, groups): (usize, usize),
    (count, pixel_step): (usize, usize),
) -> bool {
    let last = count.checked_sub(1);
    let read = last.and_then(|k| {
        k.checked_mul(pixel_step)?
            .checked_add(groups.checked_mul(4)?)
    });
    let words = groups.checked_sub(1).and_then(|g| {
        g.checked_mul(step)?
            .checked_add(2 * last? + 2)
            .filter(|_| step.checked_mul(4 * groups).is_some())
    });
    step >= 2 && read.is_some_and(|n| n <= run) && words.is_some_and(|n| n <= patch)
}

/// [`pack_pixel_groups`] in plain integer arithmetic (the reference the assembly is tested
/// against).
pub fn pack_pixel_groups_portable(
    run: &[i8],
    offset: i32,
    patch: &mut [u32],
    (step, groups): (usize, usize),
    (count, pixel_step): (usize, usize),
) {
    if !pixel_groups_fit(run.len(), patch.len(), (step, groups), (count, pixel_step)) {
        return;
    }
    for k in 0..count {
        let run = run.get(k * pixel_step..).unwrap_or_default();
        let words = patch.get_mut(2 * k..).unwrap_or_default();
        pack_groups_portable(run, offset, words, step, groups);
    }
}

/// [`pack_groups`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code on other cores): one word load, two `SXTB16` and two `SADD16` per group
/// on DSP cores.
#[inline(always)]
pub fn pack_groups_portable(
    run: &[i8],
    offset: i32,
    patch: &mut [u32],
    step: usize,
    groups: usize,
) {
    if step < 2 {
        return;
    }
    let offsets = pack(offset, offset);
    let run = run.get(..groups.saturating_mul(4)).unwrap_or(run);
    // Each group's words by index (zipped with `chunks_mut(step)`, the iterator's length
    // took a division: a library call per run on the Cortex-M0).
    for (k, q) in run.chunks_exact(4).enumerate() {
        if let (Ok(q), Some([w0, w1])) = (
            <&[i8; 4]>::try_from(q),
            patch.get_mut(k * step..k * step + 2),
        ) {
            let x = word_i8(q);
            *w0 = sadd16(sxtb16(x), offsets);
            *w1 = sadd16(sxtb16_ror8(x), offsets);
        }
    }
}

/// Words of a quad patch of a one-channel 3 × 3 kernel: five per pixel, two groups of
/// four values and the ninth alone ([`crate::kernels::dot::PatchWords`]).
pub const QUAD_3X3_WORDS: usize = 20;

/// Puts a one-channel 3 × 3 window (`window[ky][kx]`, `offset` added to each value) into
/// pixel `pixel` (0 to 3) of a quad patch as [`crate::kernels::dot::pack_patch`] packs nine
/// taps: words `2p, 2p + 1` and `8 + 2p, 9 + 2p` the two groups, word `16 + p` the ninth
/// value. Returns the five words OR-ed (0: every value 0 with its offset).
#[inline(always)]
pub fn put_window_3x3(
    patch: &mut [u32; QUAD_3X3_WORDS],
    pixel: usize,
    [r0, r1, r2]: [[i8; 3]; 3],
    offset: i32,
) -> u32 {
    let v = |x: i8| i32::from(x) + offset;
    let words = [
        (2 * pixel, pack(v(r0[0]), v(r0[2]))),
        (2 * pixel + 1, pack(v(r0[1]), v(r1[0]))),
        (8 + 2 * pixel, pack(v(r1[1]), v(r2[0]))),
        (9 + 2 * pixel, pack(v(r1[2]), v(r2[1]))),
        (16 + pixel, v(r2[2]) as u32),
    ];
    let mut any = 0;
    for (i, word) in words {
        if let Some(w) = patch.get_mut(i) {
            *w = word;
        }
        any |= word;
    }
    any
}

/// Puts `count` one-channel 3 × 3 windows of a row of output pixels into pixels
/// `first..first + count` of a quad patch, as [`put_window_3x3`] puts each: window `k`'s
/// row `ky` is `rows[ky][k · step..][..3]` (`step`: the conv's stride), `offset` (in
/// `-128..=128`) added to each value. Returns the words written OR-ed. Each window's rows
/// must hold one byte past it (the word loads below read it): windows after the first that
/// lacks it, or past the quad, are not written.
///
/// A loop of assembly on DSP cores, 26 instructions a window: one word load per row, six
/// `SXTAB16` and three `PKHBT` / `PKHTB` for the five words, two `STRD` and a `STR`;
/// elsewhere [`gather_3x3_run_portable`].
#[inline(always)]
pub fn gather_3x3_run(
    rows: [&[i8]; 3],
    step: usize,
    offset: i32,
    (first, count): (usize, usize),
    patch: &mut [u32; QUAD_3X3_WORDS],
) -> u32 {
    // (The portable twin counts the windows that fit itself.)
    #[cfg(infer_core_dsp)]
    return match windows_3x3_fitting(&rows, step, (first, count)) {
        0 => 0,
        count => gather_3x3_run_dsp(rows, step, offset, (first, count), patch),
    };
    #[cfg(not(infer_core_dsp))]
    gather_3x3_run_portable(rows, step, offset, (first, count), patch)
}

/// How many of `count` windows from pixel `first` [`gather_3x3_run`] writes: those within
/// the quad whose rows hold one byte past them.
#[inline(always)]
pub(crate) fn windows_3x3_fitting(
    rows: &[&[i8]; 3],
    step: usize,
    (first, count): (usize, usize),
) -> usize {
    let shortest = rows.iter().map(|r| r.len()).min().unwrap_or(0);
    let mut count = count.min(4usize.saturating_sub(first));
    while count > 0 && (count - 1).saturating_mul(step).saturating_add(4) > shortest {
        count -= 1;
    }
    count
}

/// [`gather_3x3_run`]'s DSP assembly, for the windows it found to fit.
#[cfg(infer_core_dsp)]
#[inline(always)]
fn gather_3x3_run_dsp(
    rows: [&[i8]; 3],
    step: usize,
    offset: i32,
    (first, count): (usize, usize),
    patch: &mut [u32; QUAD_3X3_WORDS],
) -> u32 {
    let any: u32;
    let words = patch.as_mut_ptr();
    // SAFETY: the loop runs `count` times (1 to 4 - `first`, checked by the caller,
    // `gather_3x3_run`). Window `k` reads the word at byte `k · step` of each row, within
    // it (each row holds `(count - 1) · step + 4` bytes, checked; Armv7E-M and Armv8-M load
    // unaligned words), and writes words `2p, 2p + 1, 8 + 2p, 9 + 2p, 16 + p` of `patch`
    // for `p = first + k < 4`, within its 20 (`STRD` to a word-aligned `u32` buffer that
    // nothing else borrows). r6 and r7 (not operands) are saved on the stack and restored;
    // every other register written is declared.
    unsafe {
        asm!(
            "push {{r6, r7}}",
            "mov r6, r9",
            "mov r7, r8",
            "2:",
            "ldr r8, [r0]",
            "ldr r9, [r1]",
            "ldr r10, [r2]",
            "add r0, r3",
            "add r1, r3",
            "add r2, r3",
            // (a0, a2), then (a1, b0).
            "sxtab16 r11, r4, r8",
            "sxtab16 r8, r4, r8, ror #8",
            "sxtab16 r12, r4, r9",
            "pkhbt r8, r8, r12, lsl #16",
            "orr lr, lr, r11",
            "orr lr, lr, r8",
            "strd r11, r8, [r5], #8",
            // (b1, c0), then (b2, c1): c1 the top of (c3, c1).
            "sxtab16 r11, r4, r9, ror #8",
            "sxtab16 r9, r4, r10",
            "pkhbt r11, r11, r9, lsl #16",
            "sxtab16 r8, r4, r10, ror #24",
            "pkhtb r8, r8, r12, asr #16",
            "strd r11, r8, [r5, #24]",
            "orr lr, lr, r11",
            "orr lr, lr, r8",
            // c2 alone.
            "asr r9, r9, #16",
            "str r9, [r6], #4",
            "orr lr, lr, r9",
            "subs r7, #1",
            "bne 2b",
            "pop {{r6, r7}}",
            inout("r0") rows[0].as_ptr() => _,
            inout("r1") rows[1].as_ptr() => _,
            inout("r2") rows[2].as_ptr() => _,
            in("r3") step,
            in("r4") pack(offset, offset),
            inout("r5") words.add(2 * first) => _,
            inout("r8") count => _,
            inout("r9") words.add(16 + first) => _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
            inout("lr") 0u32 => any,
        );
    }
    any
}

/// [`gather_3x3_run`] in plain integer arithmetic, window by window through
/// [`put_window_3x3`]: the reference the assembly is tested against, and the code on
/// other cores.
#[inline(always)]
pub fn gather_3x3_run_portable(
    rows: [&[i8]; 3],
    step: usize,
    offset: i32,
    (first, count): (usize, usize),
    patch: &mut [u32; QUAD_3X3_WORDS],
) -> u32 {
    let mut any = 0;
    for k in 0..windows_3x3_fitting(&rows, step, (first, count)) {
        let window = rows.map(|r| {
            let at = k.saturating_mul(step);
            r.get(at..).and_then(|r| r.first_chunk::<3>()).copied()
        });
        if let [Some(r0), Some(r1), Some(r2)] = window {
            any |= put_window_3x3(patch, first + k, [r0, r1, r2], offset);
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dot::pack_patch;
    use crate::kernels::TestRng;
    use crate::requant::multiply_by_quantized_multiplier;
    use crate::stack::prepared::{is_dense_prepared, Preparation::Widened};
    use std::vec::Vec;

    /// `smmlar` from the magnitudes equals the signed 64-bit `(a · b + 2^31) >> 32`, on edge
    /// and random operands of both signs.
    #[test]
    fn smmlar_is_the_rounded_high_product() {
        let mut rng = TestRng(0x5A4A);
        let want = |a: i32, b: i32, acc: i32| {
            acc.wrapping_add(((i64::from(a) * i64::from(b) + (1 << 31)) >> 32) as i32)
        };
        let edges = [
            0,
            1,
            -1,
            i32::MIN,
            i32::MAX,
            1 << 30,
            -(1 << 30),
            0xFFFF,
            -0x10000,
        ];
        for &a in &edges {
            for &b in &edges {
                assert_eq!(smmlar(a, b, 7), want(a, b, 7), "{a} {b}");
            }
        }
        for _ in 0..100_000 {
            let a = (rng.next_u64() as i32) >> rng.below(32);
            let b = (rng.next_u64() as i32) >> rng.below(32);
            let acc = rng.next_u64() as i32;
            assert_eq!(smmlar(a, b, acc), want(a, b, acc), "{a} {b} {acc}");
        }
    }

    /// The quad conv of `patch` and the int8 rows `w` (no widened rows in it), the rows
    /// widened ([`widen_filter`]), and whether they widened.
    fn quad_conv<'a>(
        patch: &'a [u32],
        w: &'a [u8],
        (taps, filters, stride): (usize, usize, usize),
    ) -> (QuadConv<'a>, Vec<u32>, bool) {
        let mut wide = std::vec![0u32; filters * wide_words(taps)];
        let widened = widen_filter(w, taps, filters, &mut wide);
        let conv = QuadConv {
            patch,
            weights: w,
            taps,
            filters,
            stride,
            wide: &[],
        };
        (conv, wide, widened)
    }

    /// Packing whole groups of int8 values with an offset, a packed patch's groups and one
    /// pixel's share of a quad patch, against `pack_patch`, on random lengths, offsets and
    /// values; nothing else is written.
    #[test]
    fn packed_groups_equal_pack_patch() {
        let mut rng = TestRng(0x9AC4);
        for case in 0..300 {
            let len = rng.below(120) as usize;
            let groups = len / 4;
            let x: Vec<i8> = (0..len).map(|_| rng.i8()).collect();
            let offset = rng.below(257) as i32 - 128;
            let mut want = std::vec![0u32; 2 * groups];
            pack_patch(&mut want, 4 * groups, |t| i32::from(x[t]) + offset);
            let fill = rng.next_u64() as u32;
            for step in [2, 8] {
                for f in [pack_groups, pack_groups_portable] {
                    let mut patch = std::vec![fill; step * groups + 2];
                    f(&x, offset, &mut patch, step, groups);
                    for (k, w) in patch.iter().enumerate() {
                        let g = k / step;
                        let expected = if g < groups && k % step < 2 {
                            want[2 * g + k % step]
                        } else {
                            fill
                        };
                        assert_eq!(*w, expected, "{case}: step {step}, word {k}");
                    }
                }
            }
        }
    }

    /// The ReLU requantization of whole positions equals the general one (TFLite's
    /// `MultiplyByQuantizedMultiplier` of each sum, offset, clamped) on random sums, biases, multipliers ≥ 0, shifts ≤ 0 and zero points, with the
    /// floor at the zero point or (zero point −128, no ReLU) at −128.
    #[test]
    fn relu_requantization_equals_the_general_one() {
        let mut rng = TestRng(0x2E1A);
        for case in 0..2000 {
            let channels = 1 + rng.below(12) as usize;
            let positions = 1 + rng.below(3) as usize;
            // Biases and sums of every magnitude, so that most results land inside the
            // clamp.
            let params = RandomRequant::new(&mut rng, channels);
            let zero_point = params.zero_point;
            let rq = ChannelRequant {
                activation_min: if rng.below(4) == 0 { -128 } else { zero_point },
                ..params.relu()
            };
            if rq.activation_min < rq.output_offset {
                continue;
            }
            let values: Vec<u32> = (0..positions * channels)
                .map(|_| (rng.next_u64() as i32 >> rng.below(24)) as u32)
                .collect();
            let mut want = values.clone();
            rq.map_positions(&mut want, channels, None, |acc, m, s| {
                let scaled = multiply_by_quantized_multiplier(acc, word(m) as i32, i32::from(s));
                scaled
                    .saturating_add(zero_point)
                    .max(rq.activation_min)
                    .min(127) as i8
            });
            let mut got = values.clone();
            requantize_relu(&rq, &mut got, channels, None);
            let n = positions * channels;
            let want = &int8_of_words(&mut want)[..n];
            assert_eq!(&int8_of_words(&mut got)[..n], want, "{case}");
            // Into bytes of their own.
            let mut got = values;
            let mut out = std::vec![0i8; n];
            requantize_relu(&rq, &mut got, channels, Some(&mut out));
            assert_eq!(out, want, "{case}: into bytes");
        }
    }

    /// Two filters' dot products over whole octets of a packed patch, against the sum of
    /// the products written out.
    #[test]
    fn dot2_octets_is_the_sum_of_products() {
        let mut rng = TestRng(0x0C7E7);
        for octets in 0..6 {
            let taps = 8 * octets + rng.below(8) as usize;
            let x: std::vec::Vec<i32> = (0..taps).map(|_| rng.below(511) as i32 - 255).collect();
            let w: [std::vec::Vec<u8>; 2] =
                [0, 1].map(|_| (0..taps).map(|_| rng.next_u64() as u8).collect());
            let mut patch = std::vec![0u32; crate::kernels::dot::PatchWords::words(taps)];
            crate::kernels::dot::pack_patch(&mut patch, taps, |t| x[t]);
            let start = [rng.next_u64() as i32, rng.next_u64() as i32];
            let want = [0, 1].map(|f| {
                (0..8 * octets).fold(start[f], |a, t| {
                    a.wrapping_add(x[t] * i32::from(w[f][t] as i8))
                })
            });
            assert_eq!(
                dot2_octets(&patch, &w[0], &w[1], octets, start),
                want,
                "{octets}"
            );
            assert_eq!(
                dot2_octets_portable(&patch, &w[0], &w[1], octets, start),
                want
            );
            // Too short a slice: nothing added.
            assert_eq!(
                dot2_octets(&patch, &w[0][..taps / 2], &w[1], octets.max(1), start),
                start
            );
        }
    }

    /// Random requantization parameters of some channels, as the model holds them: biases of
    /// every magnitude, multipliers ≥ 0, shifts in −31..=0, a zero point in int8.
    struct RandomRequant {
        bias: Vec<u8>,
        multiplier: Vec<u8>,
        shift: Vec<u8>,
        zero_point: i32,
    }

    impl RandomRequant {
        fn new(rng: &mut TestRng, channels: usize) -> Self {
            let bias = (0..channels)
                .flat_map(|_| ((rng.next_u64() as i32) >> rng.below(32)).to_le_bytes())
                .collect();
            let multiplier = (0..channels)
                .flat_map(|_| ((rng.next_u64() as u32) >> 1).to_le_bytes())
                .collect();
            let shift = (0..channels)
                .map(|_| (-(rng.below(32) as i8)) as u8)
                .collect();
            let zero_point = rng.below(256) as i32 - 128;
            Self {
                bias,
                multiplier,
                shift,
                zero_point,
            }
        }

        /// Their ReLU's requantization: the floor at the zero point, the ceiling 127.
        fn relu(&self) -> ChannelRequant<'_> {
            ChannelRequant {
                bias: &self.bias,
                multiplier: &self.multiplier,
                shift: &self.shift,
                output_offset: self.zero_point,
                activation_min: self.zero_point,
                activation_max: 127,
            }
        }
    }

    /// The quad patch of four pixels' `taps` values, written out from its definition.
    fn quad_patch(x: &[Vec<i32>; 4], taps: usize) -> Vec<u32> {
        let mut patch = std::vec![0u32; 4 * crate::kernels::dot::PatchWords::words(taps)];
        for (p, x) in x.iter().enumerate() {
            for g in 0..taps / 4 {
                let t = 4 * g;
                patch[8 * g + 2 * p] = pack(x[t], x[t + 2]);
                patch[8 * g + 2 * p + 1] = pack(x[t + 1], x[t + 3]);
            }
            for i in 0..taps % 4 {
                patch[taps / 4 * 8 + 4 * i + p] = x[taps / 4 * 4 + i] as u32;
            }
        }
        patch
    }

    /// Four pixels' convolutions stored, or folded into a pool window's maxima, over quad patches of random
    /// lengths, against the sums of products written out.
    #[test]
    fn quad_filters_store_or_fold_the_sums_of_products() {
        let mut rng = TestRng(0x9A12);
        for case in 0..40 {
            let taps = 16 * (case % 5) + [0, 4, 9, 3][case % 4];
            let filters = 1 + rng.below(5) as usize;
            let stride = [0, filters, filters + 3][case % 3];
            let x: [std::vec::Vec<i32>; 4] =
                [0; 4].map(|_| (0..taps).map(|_| rng.below(511) as i32 - 255).collect());
            let w: std::vec::Vec<u8> = (0..taps * filters).map(|_| rng.next_u64() as u8).collect();
            let patch = quad_patch(&x, taps);
            let start: std::vec::Vec<u32> = (0..3 * stride + filters)
                .map(|_| (rng.below(2001) as i32 - 1000) as u32)
                .collect();
            let mut want = start.clone();
            if taps > 0 {
                for f in 0..filters {
                    for (p, x) in x.iter().enumerate() {
                        let sum: i32 = (0..taps)
                            .map(|t| x[t] * i32::from(w[f * taps + t] as i8))
                            .sum();
                        put_sum(&mut want, p * stride + f, stride, sum);
                    }
                }
            }
            let (conv, wide, widened) = quad_conv(&patch, &w, (taps, filters, stride));
            assert_eq!(widened, taps > 0);
            assert_eq!(is_widened(&w, taps, filters, &wide), taps > 0);
            // From the int8 rows, from the widened rows, and from widened rows one word
            // short (ignored: the int8 rows serve).
            let short_wide = &wide[..wide.len().saturating_sub(1)];
            for wide in [&[][..], &wide, short_wide] {
                let conv = QuadConv { wide, ..conv };
                let mut got = start.clone();
                quad_filters(&conv, &mut got);
                assert_eq!(got, want, "case {case}: {taps} taps, {} wide", wide.len());
                let mut got = start.clone();
                quad_filters_portable(&conv, &mut got);
                assert_eq!(got, want, "portable, case {case}, {} wide", wide.len());
            }
            // Widened rows are what the kernel multiplies by, when they are there.
            if taps > 0 {
                let other: std::vec::Vec<u8> = w.iter().map(|b| b.wrapping_add(1)).collect();
                let mut other_wide = std::vec![0u32; wide.len()];
                widen_filter(&other, taps, filters, &mut other_wide);
                assert!(!is_widened(&w, taps, filters, &other_wide));
                let with = |weights: &[u8], wide: &[u32]| {
                    let mut got = start.clone();
                    quad_filters_portable(
                        &QuadConv {
                            weights,
                            wide,
                            ..conv
                        },
                        &mut got,
                    );
                    got
                };
                assert_eq!(with(&w, &other_wide), with(&other, &[]), "case {case}");
            }
            // Too short a slice: nothing changes.
            let mut got = start.clone();
            let short = &w[..w.len().saturating_sub(1)];
            quad_filters(
                &QuadConv {
                    weights: short,
                    ..conv
                },
                &mut got,
            );
            assert_eq!(got, start);
        }
    }

    /// Four pixels' convolutions requantized by a ReLU's requantization and by one without
    /// a fused activation (the whole int8 range), over random taps, filters, strides and
    /// parameters (sums of every magnitude, shifts 0 to −33), against TFLite's
    /// requantization of the sums written out; a clamp or parameters the kernel does not
    /// take leave the output as it was.
    #[test]
    fn quad_filters_requant_requantize_the_sums_of_products() {
        let mut rng = TestRng(0x7E1A);
        for case in 0..160 {
            let taps = 1 + rng.below(70) as usize;
            let filters = 1 + rng.below(6) as usize;
            let stride = [filters, filters + 2, 0][case % 3];
            // Values of every size, so that sums reach far past the clamp both ways.
            let x: [Vec<i32>; 4] = [0; 4].map(|_| {
                let bound = [16, 64, 256][rng.below(3) as usize];
                (0..taps)
                    .map(|_| rng.below(2 * bound - 1) as i32 - (bound as i32 - 1))
                    .collect()
            });
            let w: Vec<u8> = (0..taps * filters).map(|_| rng.next_u64() as u8).collect();
            let patch = quad_patch(&x, taps);
            let mut params = RandomRequant::new(&mut rng, filters);
            // Shifts past the reference's 31 too, and none.
            if case % 4 == 1 {
                params.shift[0] = [0u8, (-32i8) as u8, (-33i8) as u8][case % 3];
            }
            let zero_point = params.zero_point;
            let relu = case % 2 == 0;
            let rq = if relu {
                params.relu()
            } else {
                ChannelRequant {
                    activation_min: -128,
                    ..params.relu()
                }
            };
            let start: Vec<i8> = (0..3 * stride + filters).map(|_| rng.i8()).collect();
            let mut want = start.clone();
            for (p, x) in x.iter().enumerate() {
                for f in 0..filters {
                    let sum: i32 = (0..taps)
                        .map(|t| x[t] * i32::from(w[f * taps + t] as i8))
                        .sum();
                    let (b, m, s) = rq.channel(f).unwrap();
                    let scaled = multiply_by_quantized_multiplier(sum.wrapping_add(b), m, s);
                    let floor = if relu { zero_point } else { -128 };
                    want[p * stride + f] =
                        scaled.saturating_add(zero_point).clamp(floor, 127) as i8;
                }
            }
            let (conv, wide, widened) = quad_conv(&patch, &w, (taps, filters, stride));
            assert!(widened);
            for wide in [&[][..], &wide] {
                let conv = QuadConv { wide, ..conv };
                let mut got = start.clone();
                assert!(quad_filters_requant(&conv, &rq, &mut got));
                assert_eq!(got, want, "case {case}: {taps} taps, {} wide", wide.len());
                let mut got = start.clone();
                quad_filters_requant_portable(&conv, &rq, &mut got);
                assert_eq!(got, want, "portable, case {case}");
            }
            // A ceiling below 127, parameters one filter short, an output one byte short:
            // nothing written.
            let capped = ChannelRequant {
                activation_max: 100,
                ..rq
            };
            let short = ChannelRequant {
                shift: &params.shift[..filters - 1],
                ..rq
            };
            for (rq, len) in [
                (capped, start.len()),
                (short, start.len()),
                (rq, start.len() - 1),
            ] {
                let mut got = start.clone();
                assert!(!quad_filters_requant(&conv, &rq, &mut got[..len]));
                assert_eq!(got, start, "case {case}");
            }
        }
    }

    /// A dense layer's quads of units from widened rows, over random sizes, against the
    /// sums of products written out; rows of other weights, or too short, are refused.
    #[test]
    fn dense_quads_from_widened_rows_add_the_sums_of_products() {
        let mut rng = TestRng(0xD1DE);
        for case in 0..200 {
            let inputs = 16 * (1 + rng.below(12) as usize);
            let units = 1 + rng.below(40) as usize;
            let x: std::vec::Vec<i32> = (0..inputs).map(|_| rng.below(511) as i32 - 255).collect();
            let w: std::vec::Vec<u8> = (0..inputs * units).map(|_| rng.next_u64() as u8).collect();
            let patch: std::vec::Vec<u32> = x
                .chunks_exact(4)
                .flat_map(|q| [pack(q[0], q[2]), pack(q[1], q[3])])
                .collect();
            let offset = rng.below(257) as i32 - 128;
            let wide: std::vec::Vec<u32> = dense_wide_words_of(&w, inputs, units, offset).collect();
            assert_eq!(wide.len(), dense_wide_words(inputs, units) + units);
            let layer = (&w[..], inputs, units, offset);
            assert_eq!(is_dense_prepared(layer, &wide, Widened), units >= 4);
            // The terms of another input offset are another layer's (unless every row
            // sums to zero).
            if units >= 4 {
                let row_sum = |u: usize| -> i32 {
                    w[u * inputs..(u + 1) * inputs]
                        .iter()
                        .map(|&v| i32::from(v as i8))
                        .sum()
                };
                let other = (&w[..], inputs, units, offset ^ 1);
                let same = (0..units).all(|u| row_sum(u) == 0);
                assert_eq!(
                    is_dense_prepared(other, &wide, Widened),
                    same,
                    "case {case}"
                );
            }
            let start: std::vec::Vec<u32> = (0..units).map(|_| rng.next_u64() as u32).collect();
            let mut want = start.clone();
            for (u, acc) in want.iter_mut().enumerate().take(units / 4 * 4) {
                let sum: i32 = (0..inputs)
                    .map(|i| x[i] * i32::from(w[u * inputs + i] as i8))
                    .sum();
                *acc = acc.wrapping_add(sum as u32);
            }
            for kernel in [dense_quads_widened, dense_quads_widened_portable] {
                let mut got = start.clone();
                kernel(&patch, &wide, (inputs, 2 * inputs), &mut got);
                assert_eq!(got, want, "case {case}: {inputs} inputs, {units} units");
                // The quads' words one short: nothing changes (when there is a quad at all).
                let mut got = start.clone();
                let short = &wide[..(units / 4 * 2 * inputs).saturating_sub(1)];
                kernel(&patch, short, (inputs, 2 * inputs), &mut got);
                assert_eq!(got, start, "case {case}");
                // The last sixteen inputs alone, as a streamed layer's position: each
                // quad's words from the position's on, the layer's apart.
                let at = inputs - 16;
                let mut got = start.clone();
                let mut want = start.clone();
                for (u, acc) in want.iter_mut().enumerate().take(units / 4 * 4) {
                    let sum: i32 = (at..inputs)
                        .map(|i| x[i] * i32::from(w[u * inputs + i] as i8))
                        .sum();
                    *acc = acc.wrapping_add(sum as u32);
                }
                let position = &patch[at / 2..];
                let rows = wide.get(2 * at..).unwrap_or_default();
                kernel(position, rows, (16, 2 * inputs), &mut got);
                assert_eq!(got, want, "case {case}: inputs {at}.. alone");
            }
            // A weight of a widened row changed: the rows are another layer's.
            if units >= 4 {
                let mut other = w.clone();
                other[rng.below((units / 4 * 4 * inputs) as u64) as usize] ^= 1;
                assert!(
                    !is_dense_prepared((&other, inputs, units, offset), &wide, Widened),
                    "case {case}"
                );
            }
        }
    }

    /// A streamed dense layer's step (pairs of units over whole octets of values) and a
    /// dense layer's quads of units (over whole sixteens) over random sizes, against the
    /// sums of products written out.
    #[test]
    fn dense_rows_and_quads_add_the_sums_of_products() {
        type Rows = fn(&DenseRows<'_>, &mut [u32]);
        let kernels: [(usize, usize, Rows, Rows); 2] = [
            (8, 2, dense_rows, dense_rows_portable),
            (32, 4, dense_quads, dense_quads_portable),
        ];
        let mut rng = TestRng(0xDE5E);
        for (values, least, kernel, portable) in kernels {
            for case in 0..60 {
                let channels = values * (case % 5) + if case % 7 == 6 { values / 2 } else { 0 };
                let stride = channels + rng.below(20) as usize;
                let units = 1 + rng.below(13) as usize;
                let x: std::vec::Vec<i32> =
                    (0..channels).map(|_| rng.below(511) as i32 - 255).collect();
                let w: std::vec::Vec<u8> =
                    (0..units * stride).map(|_| rng.next_u64() as u8).collect();
                let mut patch = std::vec![0u32; crate::kernels::dot::PatchWords::words(channels)];
                crate::kernels::dot::pack_patch(&mut patch, channels, |t| x[t]);
                let start: std::vec::Vec<u32> = (0..units).map(|_| rng.next_u64() as u32).collect();
                let mut want = start.clone();
                let whole = units / least * least;
                if channels % values == 0 && channels > 0 && whole > 0 {
                    for (u, acc) in want.iter_mut().take(whole).enumerate() {
                        let sum: i32 = (0..channels)
                            .map(|t| x[t] * i32::from(w[u * stride + t] as i8))
                            .sum();
                        *acc = acc.wrapping_add(sum as u32);
                    }
                }
                let rows = DenseRows {
                    patch: &patch,
                    weights: &w,
                    channels,
                    stride,
                };
                let mut got = start.clone();
                kernel(&rows, &mut got);
                assert_eq!(got, want, "{values}: case {case}");
                let mut got = start.clone();
                portable(&rows, &mut got);
                assert_eq!(got, want, "portable {values}: case {case}");
                // Too short a slice: nothing changes.
                let mut got = start.clone();
                let short = &w[..whole.saturating_sub(1) * stride + channels / 2];
                kernel(
                    &DenseRows {
                        weights: short,
                        ..rows
                    },
                    &mut got,
                );
                assert_eq!(got, start);
            }
        }
    }

    /// A dense layer from its int8 input, widened rows and offset terms: whole quads, then
    /// a pair, an odd last unit left alone; each unit's sum of `(x + offset) · w` written,
    /// only from word-aligned values.
    #[test]
    fn widened_rows_over_int8_values_write_each_units_dot_product() {
        let mut rng = TestRng(0x1D8);
        let mut computed = 0;
        for case in 0..200 {
            let inputs = if case % 9 == 8 {
                4 * (1 + rng.below(12) as usize)
            } else {
                16 * (1 + rng.below(12) as usize)
            };
            let units = 1 + rng.below(14) as usize;
            let offset = rng.below(257) as i32 - 128;
            // The values from byte `start` of word-aligned memory (misaligned one case in
            // five).
            let start = if case % 5 == 4 {
                1 + rng.below(3) as usize
            } else {
                0
            };
            let mut words = std::vec![0u32; inputs / 4 + 1];
            let bytes = int8_of_words(&mut words);
            for b in bytes.iter_mut() {
                *b = rng.i8();
            }
            let x = &bytes[start..start + inputs];
            let w: std::vec::Vec<u8> = (0..units * inputs).map(|_| rng.next_u64() as u8).collect();
            let prepared: std::vec::Vec<u32> =
                dense_wide_words_of(&w, inputs, units, offset).collect();
            let (wide, terms) = prepared.split_at(dense_wide_words(inputs, units));
            assert_eq!(terms.len(), units, "case {case}");
            let start_sums: std::vec::Vec<u32> =
                (0..units).map(|_| rng.next_u64() as u32).collect();
            let mut want = start_sums.clone();
            let fits = inputs % 16 == 0 && units >= 2 && start == 0;
            if fits {
                computed += 1;
                for (u, acc) in want.iter_mut().take(units / 2 * 2).enumerate() {
                    let sum: i32 = (0..inputs)
                        .map(|t| (i32::from(x[t]) + offset) * i32::from(w[u * inputs + t] as i8))
                        .sum();
                    *acc = sum as u32;
                }
            }
            let mut got = start_sums.clone();
            assert_eq!(dense_widened_i8(x, (wide, terms), inputs, &mut got), fits);
            assert_eq!(got, want, "case {case}: {inputs} inputs, {units} units");
            let mut got = start_sums.clone();
            let portable = dense_widened_i8_portable(x, (wide, terms), inputs, &mut got);
            assert_eq!((portable, &got), (fits, &want), "portable, case {case}");
            // One word short, one term short, or one value: nothing changes.
            let mut got = start_sums.clone();
            let short = &wide[..wide.len().saturating_sub(1)];
            let few = &terms[..units / 2 * 2 - usize::from(units >= 2)];
            assert!(!dense_widened_i8(x, (short, terms), inputs, &mut got));
            assert!(!dense_widened_i8(x, (wide, few), inputs, &mut got));
            assert!(!dense_widened_i8(
                &x[..inputs - 1],
                (wide, terms),
                inputs,
                &mut got
            ));
            assert_eq!(got, start_sums, "case {case}");
        }
        assert!(computed > 100, "{computed}");
    }

    /// A block of depthwise pixels fits exactly when every word it reads and writes lies
    /// inside the slices, on random steps and offsets.
    #[test]
    fn dw_quads_fit_exactly_when_every_word_is_inside() {
        let mut rng = TestRng(0xF175);
        let mut fitting = 0;
        for _ in 0..20_000 {
            let small = |rng: &mut TestRng, n: u64| rng.below(n) as i32 - 4;
            let mut q = DwQuad {
                in_step: small(&mut rng, 24),
                out_step: small(&mut rng, 24),
                in_row: small(&mut rng, 60),
                out_row: small(&mut rng, 60),
                cols: rng.below(4) as u32,
                rows: rng.below(4) as u32,
                ..DwQuad::default()
            };
            for t in &mut q.taps {
                t[0] = (rng.below(40) as i32 - 8) as u32;
            }
            let (len, out_len) = (rng.below(200) as usize, rng.below(200) as usize);
            let origin = rng.below(60) as isize - 20;
            let out_at = rng.below(60) as usize;
            let steps = [q.in_step, q.out_step, q.in_row, q.out_row];
            let inside = steps.iter().all(|&s| s >= 0)
                && q.rows > 0
                && q.cols > 0
                && (0..q.rows as isize).all(|i| {
                    (0..q.cols as isize).all(|j| {
                        let pixel = origin + i * q.in_row as isize + j * q.in_step as isize;
                        let out =
                            out_at as isize + i * q.out_row as isize + j * q.out_step as isize;
                        q.taps.iter().all(|t| {
                            let at = pixel + t[0] as i32 as isize;
                            at >= 0 && at + 4 <= len as isize
                        }) && out >= 0
                            && out + 4 <= out_len as isize
                    })
                });
            assert_eq!(q.fits(len, origin, out_len, out_at), inside, "{q:?}");
            fitting += usize::from(inside);
        }
        assert!(fitting > 100, "{fitting}");
    }

    /// A depthwise pixel's requantization equals TFLite's (the doubled sum's `SMMLAR`,
    /// sign and shift against `MultiplyByQuantizedMultiplier`, offset, clamped) for sums
    /// below 2^30 in magnitude, multipliers ≥ 0 and right shifts 1 to 31.
    #[test]
    fn dw_requantization_equals_tflite() {
        let mut rng = TestRng(0x5A11);
        for i in 0..200_000 {
            let r = rng.next_u64();
            let acc = ((r as i32) >> 2) >> (r >> 59);
            let acc = if i % 7 == 0 {
                (acc & 0x7FF) - 0x400
            } else {
                acc
            };
            let multiplier = if i % 5 == 0 {
                (rng.next_u64() as u32 >> 1) as i32
            } else {
                (1 << 30) + ((rng.next_u64() as u32) >> 2) as i32
            };
            let shift = 1 + rng.below(31) as i32;
            let zero_point = rng.below(256) as i32 - 128;
            let want = (multiply_by_quantized_multiplier(acc, multiplier, -shift)
                .saturating_add(zero_point))
            .clamp(-128, 127) as i8;
            let r = DwRequant {
                multiplier,
                half: 1 << (shift - 1),
                shift,
                zero_point,
            };
            assert_eq!(
                dw_requantize(2 * acc, &r),
                want,
                "acc={acc} m={multiplier} s={shift}"
            );
        }
    }

    /// The instructions' definitions (Arm ARM), written out on bytes and halves.
    #[test]
    fn operations_match_their_definitions() {
        let mut rng = TestRng(0xD5B);
        for _ in 0..10_000 {
            let (a, b, acc) = (
                rng.next_u64() as u32,
                rng.next_u64() as u32,
                rng.next_u64() as i32,
            );
            let byte = |x: u32, i: u32| i32::from((x >> (8 * i)) as u8 as i8);
            assert_eq!((lo(sxtb16(a)), hi(sxtb16(a))), (byte(a, 0), byte(a, 2)));
            assert_eq!(
                (lo(sxtb16_ror8(a)), hi(sxtb16_ror8(a))),
                (byte(a, 1), byte(a, 3))
            );
            assert_eq!((lo(pkhbt(a, b)), hi(pkhbt(a, b))), (lo(a), lo(b)));
            assert_eq!((lo(pkhtb(a, b)), hi(pkhtb(a, b))), (hi(b), hi(a)));
            assert_eq!(
                ssub16(a, b),
                pack(lo(a).wrapping_sub(lo(b)), hi(a).wrapping_sub(hi(b)))
            );
            assert_eq!(
                sadd16(a, b),
                pack(lo(a).wrapping_add(lo(b)), hi(a).wrapping_add(hi(b)))
            );
            let wide = i64::from(acc) + i64::from(lo(a) * lo(b)) + i64::from(hi(a) * hi(b));
            assert_eq!(smlad(a, b, acc), wide as i32);
            assert_eq!(
                smlabb(a, b, acc),
                (i64::from(acc) + i64::from(lo(a) * lo(b))) as i32
            );
            assert_eq!(
                smlatb(a, b, acc),
                (i64::from(acc) + i64::from(hi(a) * lo(b))) as i32
            );
            let (x, y) = (rng.next_u64() as i16, rng.next_u64() as i16);
            let p = pack(i32::from(x), i32::from(y));
            assert_eq!((lo(p), hi(p)), (i32::from(x), i32::from(y)));
        }
    }
}
