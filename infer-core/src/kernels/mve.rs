//! Dot products on the M-profile Vector Extension (Helium, MVE) of the Cortex-M55 and M85:
//! eight 16-bit multiply-accumulates per `VMLADAVA.S16`.
//!
//! Like [`super::dsp`], this module holds inline assembly and so allows `unsafe` code: on an
//! MVE core (`cfg(infer_core_mve)`, set by `build.rs` for `thumbv8m.main-*` built for a
//! Cortex-M55/M85 or with `+mve`) each function is one loop of assembly. Everywhere else,
//! including the host where the tests run, each is its portable twin (`…_portable`, the
//! reference the assembly must equal bit for bit), which is also the code DSP cores and
//! plain cores inline.
//!
//! Both read a patch packed by [`crate::kernels::dot::pack_patch`] as it is: group `g` of
//! four taps is the words `(x0, x2), (x1, x3)`, i.e. the halfwords `x0 x2 x1 x3`. The
//! assembly brings eight taps into natural order with one gather load (`VLDRH.U16` with the
//! halfword offsets [`GATHER`]) shared by every filter, and widens eight int8 weights of a
//! filter with one `VLDRB.S16`; its loops are tail-predicated (`WLSTP`/`LETP`), so a last
//! group of four taps needs no code of its own.

#![allow(unsafe_code)]

#[cfg(infer_core_mve)]
use core::arch::asm;

use super::dsp::{pack, smlad, sxtb16, sxtb16_ror8};

/// Halfword offsets that put eight taps of a packed patch (`x0 x2 x1 x3 x4 x6 x5 x7`) back
/// into their order: lane `i` loads halfword `GATHER[i]`.
pub const GATHER: [u16; 8] = [0, 2, 1, 3, 4, 6, 5, 7];

/// Whether `groups` groups of four taps fit `patch` (two words each) and every weight row
/// of `rows` (four bytes each): the precondition of [`dot4_groups`] and [`dot2_groups`].
fn groups_fit(patch: &[u32], rows: &[&[u8]], groups: usize) -> bool {
    patch.len() / 2 >= groups && rows.iter().all(|w| w.len() / 4 >= groups)
}

/// The four weights of group `g` of row `w`, as one little-endian word.
#[inline(always)]
fn weight_word(w: &[u8]) -> u32 {
    u32::from_le_bytes([w[0], w[1], w[2], w[3]])
}

/// Four filters' dot products over the first `groups` groups of four taps of a packed patch
/// and int8 weight rows `w` (bytes, any alignment), added to `acc`. Returns `acc` unchanged
/// if a slice is shorter than that.
///
/// On an MVE core this is a loop of assembly: eight taps of the four filters in ten
/// instructions (one gather of the patch, one pointer step, then per filter one widening
/// weight load and one `VMLADAVA.S16`); elsewhere [`dot4_groups_portable`].
#[cfg_attr(infer_core_mve, inline(never))]
#[cfg_attr(not(infer_core_mve), inline(always))]
pub fn dot4_groups(patch: &[u32], w: [&[u8]; 4], groups: usize, acc: [i32; 4]) -> [i32; 4] {
    if !groups_fit(patch, &w, groups) {
        return acc;
    }
    #[cfg(infer_core_mve)]
    {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        // SAFETY: the loop runs over `4 · groups` halfwords (tail-predicated: lanes past the
        // count neither load nor accumulate). `pp` gathers from the first `8 · groups` bytes
        // of `patch` (checked above; halfword-aligned, as gathers need), the four weight
        // pointers read `4 · groups` bytes of their rows (checked above; byte loads). Nothing
        // is written to memory, the stack is not touched, and every register written (the
        // pointers, lr and q0–q3) is declared. The widening loads take low registers
        // (r0–r5) and `VMLADAVA` even ones, hence the explicit registers.
        unsafe {
            asm!(
                "vldrh.u16 q3, [{offsets}]",
                "wlstp.16 lr, {n}, 3f",
                "2:",
                "vldrh.u16 q0, [{pp}, q3, uxtw #1]",
                "adds {pp}, #16",
                "vldrb.s16 q1, [r0], #8",
                "vmladava.s16 r2, q0, q1",
                "vldrb.s16 q2, [r1], #8",
                "vmladava.s16 r4, q0, q2",
                "vldrb.s16 q1, [r3], #8",
                "vmladava.s16 r8, q0, q1",
                "vldrb.s16 q2, [r5], #8",
                "vmladava.s16 r10, q0, q2",
                "letp lr, 2b",
                "3:",
                offsets = in(reg) GATHER.as_ptr(),
                n = in(reg) 4 * groups,
                pp = inout(reg) patch.as_ptr() => _,
                inout("r0") w[0].as_ptr() => _,
                inout("r1") w[1].as_ptr() => _,
                inout("r3") w[2].as_ptr() => _,
                inout("r5") w[3].as_ptr() => _,
                inout("r2") a0,
                inout("r4") a1,
                inout("r8") a2,
                inout("r10") a3,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                out("q3") _,
                options(nostack, readonly),
            );
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(infer_core_mve))]
    dot4_groups_portable(patch, w, groups, acc)
}

/// [`dot4_groups`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
#[inline(always)]
pub fn dot4_groups_portable(
    patch: &[u32],
    w: [&[u8]; 4],
    groups: usize,
    mut acc: [i32; 4],
) -> [i32; 4] {
    if !groups_fit(patch, &w, groups) {
        return acc;
    }
    let [w0, w1, w2, w3] = w;
    for ((((words, a), b), c), d) in patch
        .chunks_exact(2)
        .zip(w0.chunks_exact(4))
        .zip(w1.chunks_exact(4))
        .zip(w2.chunks_exact(4))
        .zip(w3.chunks_exact(4))
        .take(groups)
    {
        let (p0, p1) = (words[0], words[1]);
        let ws = [a, b, c, d].map(weight_word);
        for (acc, w) in acc.iter_mut().zip(ws) {
            *acc = smlad(sxtb16(w), p0, *acc);
            *acc = smlad(sxtb16_ror8(w), p1, *acc);
        }
    }
    acc
}

/// Two filters' dot products over the first `groups` groups of four taps of a packed patch
/// and int8 weight rows `w0`, `w1` (bytes, any alignment), added to `acc`. Returns `acc`
/// unchanged if a slice is shorter than that.
///
/// On an MVE core this is a loop of assembly: eight taps of both filters in six
/// instructions; elsewhere [`dot2_groups_portable`].
#[cfg_attr(infer_core_mve, inline(never))]
#[cfg_attr(not(infer_core_mve), inline(always))]
pub fn dot2_groups(patch: &[u32], w0: &[u8], w1: &[u8], groups: usize, acc: [i32; 2]) -> [i32; 2] {
    if !groups_fit(patch, &[w0, w1], groups) {
        return acc;
    }
    #[cfg(infer_core_mve)]
    {
        let [mut a0, mut a1] = acc;
        // SAFETY: as in `dot4_groups`, with two weight rows.
        unsafe {
            asm!(
                "vldrh.u16 q3, [{offsets}]",
                "wlstp.16 lr, {n}, 3f",
                "2:",
                "vldrh.u16 q0, [{pp}, q3, uxtw #1]",
                "adds {pp}, #16",
                "vldrb.s16 q1, [r1], #8",
                "vmladava.s16 r2, q0, q1",
                "vldrb.s16 q2, [r3], #8",
                "vmladava.s16 r4, q0, q2",
                "letp lr, 2b",
                "3:",
                offsets = in(reg) GATHER.as_ptr(),
                n = in(reg) 4 * groups,
                pp = inout(reg) patch.as_ptr() => _,
                inout("r1") w0.as_ptr() => _,
                inout("r3") w1.as_ptr() => _,
                inout("r2") a0,
                inout("r4") a1,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                out("q3") _,
                options(nostack, readonly),
            );
        }
        [a0, a1]
    }
    #[cfg(not(infer_core_mve))]
    dot2_groups_portable(patch, w0, w1, groups, acc)
}

/// [`dot2_groups`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
#[inline(always)]
pub fn dot2_groups_portable(
    patch: &[u32],
    w0: &[u8],
    w1: &[u8],
    groups: usize,
    acc: [i32; 2],
) -> [i32; 2] {
    if !groups_fit(patch, &[w0, w1], groups) {
        return acc;
    }
    let [mut acc0, mut acc1] = acc;
    for ((words, a), b) in patch
        .chunks_exact(2)
        .zip(w0.chunks_exact(4))
        .zip(w1.chunks_exact(4))
        .take(groups)
    {
        let (p0, p1) = (words[0], words[1]);
        let (a, b) = (weight_word(a), weight_word(b));
        acc0 = smlad(sxtb16(a), p0, acc0);
        acc1 = smlad(sxtb16(b), p0, acc1);
        acc0 = smlad(sxtb16_ror8(a), p1, acc0);
        acc1 = smlad(sxtb16_ror8(b), p1, acc1);
    }
    [acc0, acc1]
}

/// Writes `groups` groups of four values, `run[t] + offset` for the first `4 · groups` int8
/// values of `run`, into the first `2 · groups` words of `patch` in the layout of
/// [`crate::kernels::dot::pack_patch`] (`(x0, x2), (x1, x3)` per group; `offset` within
/// `-32768..=32767 - 127`, so that every sum fits 16 bits). Writes nothing if a slice is
/// shorter than that.
///
/// On an MVE core this is a loop of assembly: eight values in five instructions (one
/// widening load, one add, one scatter store into the packed order, one pointer step, the
/// loop end); elsewhere [`pack_groups_portable`].
#[cfg_attr(infer_core_mve, inline(never))]
#[cfg_attr(not(infer_core_mve), inline(always))]
pub fn pack_groups(run: &[i8], offset: i32, patch: &mut [u32], groups: usize) {
    if run.len() / 4 < groups || patch.len() / 2 < groups {
        return;
    }
    #[cfg(infer_core_mve)]
    {
        // SAFETY: the loop runs over `4 · groups` halfwords (tail-predicated: lanes past the
        // count neither load nor store). `r1` reads the first `4 · groups` bytes of `run`
        // (checked above; byte loads; a low register, as the widening load needs), `pp`
        // scatters into the first `8 · groups` bytes of `patch` (checked above; halfword
        // stores, word-aligned buffer), which nothing else borrows. The stack is not touched,
        // and every register written (the pointers, lr, q0 and q3) is declared.
        unsafe {
            asm!(
                "vldrh.u16 q3, [{offsets}]",
                "wlstp.16 lr, {n}, 3f",
                "2:",
                "vldrb.s16 q0, [r1], #8",
                "vadd.i16 q0, q0, {offset}",
                "vstrh.16 q0, [{pp}, q3, uxtw #1]",
                "adds {pp}, #16",
                "letp lr, 2b",
                "3:",
                offsets = in(reg) GATHER.as_ptr(),
                n = in(reg) 4 * groups,
                offset = in(reg) offset,
                pp = inout(reg) patch.as_mut_ptr() => _,
                inout("r1") run.as_ptr() => _,
                out("lr") _,
                out("q0") _,
                out("q3") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(infer_core_mve))]
    pack_groups_portable(run, offset, patch, groups);
}

/// [`pack_groups`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
#[inline(always)]
pub fn pack_groups_portable(run: &[i8], offset: i32, patch: &mut [u32], groups: usize) {
    if run.len() / 4 < groups || patch.len() / 2 < groups {
        return;
    }
    for (x, words) in run
        .chunks_exact(4)
        .zip(patch.chunks_exact_mut(2))
        .take(groups)
    {
        let v = |i: usize| i32::from(x[i]) + offset;
        words[0] = pack(v(0), v(2));
        words[1] = pack(v(1), v(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dot::{pack_patch, PatchWords};
    use crate::kernels::TestRng;
    use std::vec::Vec;

    /// The lanes of the assembly's gather: eight taps of a packed patch in their order.
    #[test]
    fn gather_offsets_put_packed_taps_in_order() {
        let mut patch = [0u32; 4];
        pack_patch(&mut patch, 8, |t| t as i32 + 100);
        let halves: Vec<i32> = patch
            .iter()
            .flat_map(|&w| [super::super::dsp::lo(w), super::super::dsp::hi(w)])
            .collect();
        let gathered: Vec<i32> = GATHER.iter().map(|&o| halves[usize::from(o)]).collect();
        assert_eq!(gathered, (100..108).collect::<Vec<_>>());
    }

    /// Packing whole groups of int8 values with an offset, against `pack_patch`, on random
    /// lengths, offsets and values; too short a slice writes nothing.
    #[test]
    fn packed_groups_equal_pack_patch() {
        let mut rng = TestRng(0x9AC4);
        for case in 0..300 {
            let len = rng.below(120) as usize;
            let groups = len / 4;
            let x: Vec<i8> = (0..len).map(|_| rng.i8()).collect();
            let offset = rng.below(256) as i32 - 127;
            let mut want = std::vec![0u32; 2 * groups];
            pack_patch(&mut want, 4 * groups, |t| i32::from(x[t]) + offset);
            let fill = rng.next_u64() as u32;
            for f in [pack_groups, pack_groups_portable] {
                let mut patch = std::vec![fill; 2 * groups + 1];
                f(&x, offset, &mut patch, groups);
                assert_eq!(patch[..2 * groups], want[..], "{case}");
                assert_eq!(patch[2 * groups], fill, "{case}: wrote past the groups");
                if groups > 0 {
                    let mut short = std::vec![fill; 2 * groups - 1];
                    f(&x, offset, &mut short, groups);
                    assert!(short.iter().all(|&w| w == fill));
                }
            }
        }
    }

    /// Two and four filters' dot products over whole groups of four taps, against the sum
    /// of the products written out, on random lengths, values and starting accumulators;
    /// too short a slice adds nothing.
    #[test]
    fn group_dots_are_the_sums_of_products() {
        let mut rng = TestRng(0x4E1E);
        for case in 0..400 {
            let taps = rng.below(160) as usize;
            let groups = taps / 4;
            let x: Vec<i32> = (0..taps).map(|_| rng.below(511) as i32 - 255).collect();
            let w: [Vec<u8>; 4] = [0; 4].map(|_| (0..taps).map(|_| rng.next_u64() as u8).collect());
            let mut patch = std::vec![0u32; PatchWords::words(taps)];
            pack_patch(&mut patch, taps, |t| x[t]);
            let start = [0; 4].map(|_| rng.next_u64() as i32);
            let want = [0, 1, 2, 3].map(|f| {
                (0..4 * groups).fold(start[f], |a, t| {
                    a.wrapping_add(x[t] * i32::from(w[f][t] as i8))
                })
            });
            let rows = [&w[0][..], &w[1][..], &w[2][..], &w[3][..]];
            assert_eq!(dot4_groups(&patch, rows, groups, start), want, "{case}");
            assert_eq!(dot4_groups_portable(&patch, rows, groups, start), want);
            let two = [start[0], start[1]];
            assert_eq!(
                dot2_groups(&patch, &w[0], &w[1], groups, two),
                [want[0], want[1]],
                "{case}"
            );
            assert_eq!(
                dot2_groups_portable(&patch, &w[0], &w[1], groups, two),
                [want[0], want[1]]
            );
            if groups > 0 {
                let short = &w[2][..4 * groups - 1];
                let rows = [&w[0][..], &w[1][..], short, &w[3][..]];
                assert_eq!(dot4_groups(&patch, rows, groups, start), start);
                assert_eq!(dot2_groups(&patch, &w[0], short, groups, two), two);
                let patch = &patch[..2 * groups - 1];
                assert_eq!(dot2_groups(patch, &w[0], &w[1], groups, two), two);
            }
        }
    }
}
