//! Conv weights widened to words, for cores without a long multiply or the DSP extension
//! (the Cortex-M0, `thumbv6m`).
//!
//! There, the int8 kernels multiply one value at a time (`MULS`, 32 × 32 → 32 bits), and
//! unpacking each int8 weight took more instructions than its multiply-accumulate: a pixel's
//! four filters from their int8 rows ([`super::dot::dot_packed4`]) took about 8 instructions a
//! multiply-accumulate on resnet-tiny. A firmware's build script widens a conv's filters
//! into flash, a word per weight (four times its int8 bytes), four filters at a time, each
//! tap's four weights side by side ([`word_weights_of`]), in the order of a packed patch's
//! halves ([`super::dot::pack_patch`]: taps 0, 2, 1, 3 of each group of four). Then
//! [`dot4_words`] takes a group of four taps of one pixel for four filters in 48
//! instructions (3 a multiply-accumulate): the patch's two words loaded once (`LDM`), each
//! half sign-extended (`SXTH`, `ASRS`), each pair of weights one `LDM`, one `MULS` and one
//! `ADD` a product, the four sums in the high registers r8–r11.
//!
//! Like [`super::dsp`], this module holds inline assembly and so allows `unsafe` code: on
//! the Cortex-M0 ([`WORD_WEIGHTS`]) the group loop of [`dot4_words`] is one block of
//! assembly (LLVM's own loop spilled the four sums to the stack at every tap). Everywhere
//! else, including the host where the tests run, it is its portable twin
//! [`dot4_words_portable`], which the assembly must equal bit for bit (`tests/kernel-check`
//! runs both on the Cortex-M0 under QEMU).

#![allow(unsafe_code)]

#[cfg(all(target_arch = "arm", not(infer_core_long_multiply)))]
use core::arch::asm;

/// Whether this build's convs take their weights widened to words: a core without a long
/// multiply (the Cortex-M0).
pub const WORD_WEIGHTS: bool = cfg!(all(target_arch = "arm", not(infer_core_long_multiply)));

/// Words of the widened weights of `filters` filters of `taps` taps: `4 · taps` for each
/// whole quad of filters (the rest keep their int8 rows).
pub const fn word_weights_len(taps: usize, filters: usize) -> usize {
    filters / 4 * 4 * taps
}

/// The tap at place `k` of the widened order: taps 0, 2, 1, 3 of each whole group of four,
/// as a packed patch holds them; the taps after the groups in order.
const fn tap_at(k: usize, taps: usize) -> usize {
    if k < taps / 4 * 4 {
        k / 4 * 4 + [0, 2, 1, 3][k % 4]
    } else {
        k
    }
}

/// The widened weights of `filters` filters of `taps` int8 taps each (their rows one after
/// the other in `weights`): for each whole quad of filters, for each tap in the widened
/// order, the four filters' weights as `i32` words ([`word_weights_len`] words; short rows
/// give 0).
pub fn word_weights_of(
    weights: &[u8],
    taps: usize,
    filters: usize,
) -> impl Iterator<Item = u32> + '_ {
    (0..filters / 4).flat_map(move |q| {
        (0..taps).flat_map(move |k| {
            let t = tap_at(k, taps);
            (0..4).map(move |f| {
                let w = weights.get((4 * q + f) * taps + t).copied().unwrap_or(0);
                i32::from(w as i8) as u32
            })
        })
    })
}

/// Whether `words` are exactly the widened weights of `filters` filters of `taps` taps in
/// `weights` ([`word_weights_of`]): what a model's prepared conv weights must be to be used
/// on a core that takes them.
pub fn is_word_weights(weights: &[u8], taps: usize, filters: usize, words: &[u32]) -> bool {
    filters >= 4
        && taps > 0
        && weights.len() / taps >= filters
        && words.len() == word_weights_len(taps, filters)
        && word_weights_of(weights, taps, filters).eq(words.iter().copied())
}

/// The four sums `Σ x_t · w_f[t]` of one pixel's packed patch `patch` (`taps` taps: two
/// words per whole group of four, then a word per tap) with the four filters of `words`
/// (one quad's widened weights, `4 · taps` words, [`word_weights_of`]). Short slices
/// compute less, never panic.
///
/// On the Cortex-M0 the whole groups are one block of assembly, 48 instructions each
/// (the module's documentation); the taps after them, and everything elsewhere,
/// [`dot4_words_portable`].
#[inline(always)]
pub fn dot4_words(patch: &[u32], words: &[u32], taps: usize) -> [i32; 4] {
    let groups = taps / 4;
    #[cfg(all(target_arch = "arm", not(infer_core_long_multiply)))]
    let acc = if groups > 0 && patch.len() >= 2 * groups && words.len() >= 16 * groups {
        dot4_groups_m0(patch, words, groups)
    } else {
        // (Nothing to add, or slices too short: the groups computed less.)
        [0; 4]
    };
    #[cfg(not(all(target_arch = "arm", not(infer_core_long_multiply))))]
    let acc = groups_portable(patch, words, groups);
    tail_taps(patch, words, taps, acc)
}

/// [`dot4_words`] in plain integer arithmetic (the reference the assembly is tested
/// against).
pub fn dot4_words_portable(patch: &[u32], words: &[u32], taps: usize) -> [i32; 4] {
    let acc = groups_portable(patch, words, taps / 4);
    tail_taps(patch, words, taps, acc)
}

/// The four sums over `groups` whole groups of four taps, in plain integer arithmetic.
#[inline(always)]
fn groups_portable(patch: &[u32], words: &[u32], groups: usize) -> [i32; 4] {
    let mut acc = [0i32; 4];
    let mut w = words.chunks_exact(4);
    for pair in patch.chunks_exact(2).take(groups) {
        let (a, b) = (pair[0] as i32, pair[1] as i32);
        // The halves in the widened order: taps 0, 2, 1, 3.
        for x in [(a << 16) >> 16, a >> 16, (b << 16) >> 16, b >> 16] {
            let Some(ws) = w.next() else {
                return acc;
            };
            for (acc, &w) in acc.iter_mut().zip(ws) {
                *acc = acc.wrapping_add(x.wrapping_mul(w as i32));
            }
        }
    }
    acc
}

/// `acc` plus the taps of `taps` after its whole groups of four: a patch word (one value)
/// and four weight words each, after the groups' (none if a slice is short).
#[inline(always)]
fn tail_taps(patch: &[u32], words: &[u32], taps: usize, mut acc: [i32; 4]) -> [i32; 4] {
    let groups = taps / 4;
    let (Some(patch), Some(words)) = (patch.get(2 * groups..), words.get(16 * groups..)) else {
        return acc;
    };
    for (&x, ws) in patch.iter().zip(words.chunks_exact(4)).take(taps % 4) {
        for (acc, &w) in acc.iter_mut().zip(ws) {
            *acc = acc.wrapping_add((x as i32).wrapping_mul(w as i32));
        }
    }
    acc
}

/// One tap of [`dot4_groups_m0`]: the value r3 times the four filters' next weights (two
/// `LDM`s of two words) into the sums r8–r11.
#[cfg(all(target_arch = "arm", not(infer_core_long_multiply)))]
macro_rules! mac4 {
    () => {
        concat!(
            "ldm r1!, {{r4, r5}}\n",
            "muls r4, r3, r4\n",
            "add r8, r4\n",
            "muls r5, r3, r5\n",
            "add r9, r5\n",
            "ldm r1!, {{r4, r5}}\n",
            "muls r4, r3, r4\n",
            "add r10, r4\n",
            "muls r5, r3, r5\n",
            "add r11, r5\n",
        )
    };
}

/// The Cortex-M0's group loop of [`dot4_words`], for sizes that fit (at least one group, the
/// caller checks the slices).
#[cfg(all(target_arch = "arm", not(infer_core_long_multiply)))]
#[inline(never)]
fn dot4_groups_m0(patch: &[u32], words: &[u32], groups: usize) -> [i32; 4] {
    let mut acc = [0i32; 4];
    // SAFETY: the loop runs `groups` (≥ 1) times: r0 reads words `0 .. 2 · groups` of
    // `patch` and r1 words `0 .. 16 · groups` of `words` (word-aligned `u32` slices, their
    // lengths checked by the caller), r12 is the patch's end. The sums live in r8–r11
    // (Thumb-1 takes high registers as clobbers only: they start at 0 and are stored to
    // `acc`, whose address waits on the stack, pushed and popped here, during the loop).
    // It writes no memory but `acc`, and every register it writes is declared.
    unsafe {
        asm!(
            "mov r12, r2",
            "push {{r3}}",
            "movs r2, #0",
            "mov r8, r2",
            "mov r9, r2",
            "mov r10, r2",
            "mov r11, r2",
            "2:",
            // Taps 0 and 2 of the group: the first patch word's halves.
            "ldm r0!, {{r2}}",
            "sxth r3, r2",
            mac4!(),
            "asrs r3, r2, #16",
            mac4!(),
            // Taps 1 and 3: the second word's.
            "ldm r0!, {{r2}}",
            "sxth r3, r2",
            mac4!(),
            "asrs r3, r2, #16",
            mac4!(),
            "cmp r0, r12",
            "bne 2b",
            "pop {{r3}}",
            "mov r2, r8",
            "str r2, [r3]",
            "mov r2, r9",
            "str r2, [r3, #4]",
            "mov r2, r10",
            "str r2, [r3, #8]",
            "mov r2, r11",
            "str r2, [r3, #12]",
            inout("r0") patch.as_ptr() => _,
            inout("r1") words.as_ptr() => _,
            inout("r2") patch.as_ptr().wrapping_add(2 * groups) => _,
            inout("r3") acc.as_mut_ptr() => _,
            out("r4") _,
            out("r5") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            out("r12") _,
        );
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dot::{dot_packed4, pack_patch};
    use crate::kernels::TestRng;
    use std::vec::Vec;

    /// A pixel's four filters from their widened words equal the int8 rows' sums
    /// (`dot_packed4`) on random taps, values and weights; the words check as the rows'
    /// and no others.
    #[test]
    fn widened_words_give_the_int8_rows_sums() {
        let mut rng = TestRng(0x30D5);
        for case in 0..500 {
            let taps = 1 + rng.below(80) as usize;
            let filters = 4 * (1 + rng.below(3) as usize) + rng.below(4) as usize;
            let x: Vec<i32> = (0..taps).map(|_| rng.below(511) as i32 - 255).collect();
            let weights: Vec<u8> = (0..taps * filters).map(|_| rng.i8() as u8).collect();
            let mut patch = std::vec![0u32; taps.div_ceil(4) * 2 + 4];
            pack_patch(&mut patch, taps, |t| x[t]);
            let words: Vec<u32> = word_weights_of(&weights, taps, filters).collect();
            assert!(is_word_weights(&weights, taps, filters, &words), "{case}");
            for q in 0..filters / 4 {
                let quad = &words[4 * taps * q..4 * taps * (q + 1)];
                let rows = [0, 1, 2, 3].map(|f| &weights[(4 * q + f) * taps..][..taps]);
                let want = dot_packed4(&patch, rows);
                assert_eq!(dot4_words(&patch, quad, taps), want, "{case}: taps {taps}");
                assert_eq!(dot4_words_portable(&patch, quad, taps), want, "{case}");
            }
            let mut other = words.clone();
            other[rng.below(words.len() as u64) as usize] ^= 1;
            assert!(!is_word_weights(&weights, taps, filters, &other));
        }
    }
}
