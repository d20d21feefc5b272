//! Kernels on the M-profile Vector Extension (Helium, MVE) of the Cortex-M55 and M85: convs
//! and streamed dense layers on int8 values as they are (sixteen multiply-accumulates per
//! `VMLADAVA.S8`, the input offset folded in), the requantization four channels at a time,
//! and one-pixel dot products on a widened patch (eight per `VMLADAVA.S16`).
//!
//! Like [`super::dsp`], this module holds inline assembly and so allows `unsafe` code: on an
//! MVE core (`cfg(infer_core_mve)`, set by `build.rs` for `thumbv8m.main-*` built for a
//! Cortex-M55/M85 or with `+mve`) each function is one loop of assembly. Everywhere else,
//! including the host where the tests run, each is its portable twin (`…_portable`, the
//! reference the assembly must equal bit for bit), which is also the code DSP cores and
//! plain cores inline.
//!
//! The one-pixel dots read a patch packed by [`crate::kernels::dot::pack_patch`] as it is: group `g` of
//! four taps is the words `(x0, x2), (x1, x3)`, i.e. the halfwords `x0 x2 x1 x3`. The
//! assembly brings eight taps into natural order with one gather load (`VLDRH.U16` with the
//! halfword offsets [`GATHER`]) shared by every filter, and widens eight int8 weights of a
//! filter with one `VLDRB.S16`; its loops are tail-predicated (`WLSTP`/`LETP`), so a last
//! group of four taps needs no code of its own.

#![allow(unsafe_code)]

#[cfg(infer_core_mve)]
use core::arch::asm;

use super::dot::dot_i8_offset;
use super::dsp::{smlad, sxtb16, sxtb16_ror8};
use super::put_sum;
use super::ChannelRequant;

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
    // (Callers give chunks of four; no index, so nothing can panic where the optimiser loses
    // track of their length.)
    w.first_chunk()
        .map_or(0, |&bytes| u32::from_le_bytes(bytes))
}

/// Copies `src` into `dst`, over the shorter of the two. On an MVE core a loop of assembly
/// (four words an iteration, the last tail-predicated), so that a dense layer's offset terms
/// (the sums it starts from) call no `memcpy` (some 900 bytes of flash on the Cortex-M55);
/// elsewhere `copy_from_slice`.
#[cfg_attr(infer_core_mve, inline(never))]
#[cfg_attr(not(infer_core_mve), inline(always))]
pub fn copy_words(dst: &mut [u32], src: &[u32]) {
    let n = dst.len().min(src.len());
    // SAFETY: the loop runs over `n` words (tail-predicated: lanes past the count neither
    // load nor store; none if `n` is 0), reading the first `n` words of `src` and writing
    // the first `n` of `dst`, both at least that long (word-aligned, as `VLDRW`/`VSTRW`
    // need). It touches no stack and declares every register it writes.
    #[cfg(infer_core_mve)]
    unsafe {
        asm!(
            "wlstp.32 lr, {n}, 3f",
            "2:",
            "vldrw.u32 q0, [{src}], #16",
            "vstrw.32 q0, [{dst}], #16",
            "letp lr, 2b",
            "3:",
            n = in(reg) n,
            src = inout(reg) src.as_ptr() => _,
            dst = inout(reg) dst.as_mut_ptr() => _,
            out("lr") _,
            out("q0") _,
            options(nostack),
        );
    }
    #[cfg(not(infer_core_mve))]
    if let (Some(dst), Some(src)) = (dst.get_mut(..n), src.get(..n)) {
        dst.copy_from_slice(src);
    }
}

/// Four filters' dot products over the first `groups` groups of four taps of a packed patch
/// and int8 weight rows `w` (bytes, any alignment), added to `acc`. Returns `acc` unchanged
/// if a slice is shorter than that.
///
/// On an MVE core this is a loop of assembly: eight taps of the four filters in eleven
/// instructions (one gather of the patch, one pointer step, per filter one widening weight
/// load and one `VMLADAVA.S16`, the loop end); elsewhere [`dot4_groups_portable`].
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
/// On an MVE core this is a loop of assembly: eight taps of both filters in seven
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

/// One pixel's max update of [`quad_filters_i8`]: `*lr = max(*lr, acc)`, then `lr += r9`.
#[cfg(infer_core_mve)]
macro_rules! pixel_max {
    ($acc:literal) => {
        concat!(
            "ldr r3, [lr]\n",
            "cmp ",
            $acc,
            ", r3\n",
            "it gt\n",
            "movgt r3, ",
            $acc,
            "\n",
            "str r3, [lr]\n",
            "add lr, r9\n",
        )
    };
}
/// One block of sixteen taps of [`quad_filters_i8`]'s pair of filters (their weights in q0
/// and q1): per pixel, a load of its sixteen taps from r9 and two `VMLADAVA.S8`s into the
/// pixel's sums of the two filters.
#[cfg(infer_core_mve)]
macro_rules! quad_block {
    () => {
        concat!(
            "vldrb.s8 q2, [r9], #16\n",
            "vmladava.s8 r0, q2, q0\n",
            "vmladava.s8 r2, q2, q1\n",
            "vldrb.s8 q3, [r9], #16\n",
            "vmladava.s8 r4, q3, q0\n",
            "vmladava.s8 r6, q3, q1\n",
            "vldrb.s8 q2, [r9], #16\n",
            "vmladava.s8 r8, q2, q0\n",
            "vmladava.s8 r10, q2, q1\n",
            "vldrb.s8 q3, [r9], #16\n",
            "vmladava.s8 r12, q3, q0\n",
            "vmladava.s8 lr, q3, q1\n",
        )
    };
}

/// Requantizes whole positions of sums without their bias (`values`: one `i32` per channel
/// as `u32` bits, `channels` per position) to int8 values (value `i` into `out[i]`, or with
/// `out` `None` narrowed in place into byte `i` of `values`' memory,
/// [`super::dsp::int8_of_words`]; the bytes past them unspecified) with a requantization
/// whose shifts are all right shifts (≤ 0; a left shift gives unspecified values),
/// multipliers ≥ 0 (as every valid model's) and any clamp: each sum with its bias through
/// [`ChannelRequant::apply`]; channels past the parameters give −128.
///
/// On an MVE core, where the slices hold whole positions and the clamp lies in int8, a loop
/// of assembly: four channels at a time in fifteen instructions, twelve with a ReLU. The
/// sums, biases and multipliers are loaded as vectors of any alignment and the bias added;
/// `VQRDMULH` is exactly TFLite's saturating rounding doubling high multiply; then a
/// negative value with a shift is made one less (with saturation), so that `VRSHL` by the
/// negative shift, which rounds ties up, rounds them away from zero as TFLite's rounding
/// division does (a ReLU's floor replaces every value ≤ 0, so it skips this); then the
/// zero point added with saturation, the clamp, the narrowing store; the last four
/// tail-predicated.
/// Elsewhere [`requantize_right_portable`]. `relu` is [`ChannelRequant::relu_floor`], which a
/// caller may know at compile time. Computes nothing where the sizes do not fit.
#[inline(always)]
pub fn requantize_right(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    relu: bool,
    out: Option<&mut [i8]>,
) {
    #[cfg(infer_core_mve)]
    {
        if !right_fits(rq, values, channels, out.as_deref()) {
            return;
        }
        if relu {
            requantize_right_mve::<false>(rq, values, channels, out);
        } else {
            requantize_right_mve::<true>(rq, values, channels, out);
        }
    }
    #[cfg(not(infer_core_mve))]
    {
        let _ = relu;
        requantize_right_portable(rq, values, channels, out);
    }
}

/// [`requantize_right`] in plain integer arithmetic: each sum with its bias through
/// [`ChannelRequant::apply`] (the reference the assembly is tested against).
pub fn requantize_right_portable(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
    rq.requantize_each(values, channels, out);
}

/// Whether [`requantize_right`]'s assembly can run: whole positions of at least one
/// channel, a byte in `out` (if any) for each of their values, parameters for every
/// channel, the clamp's bounds in int8.
#[cfg(infer_core_mve)]
fn right_fits(
    rq: &ChannelRequant<'_>,
    values: &[u32],
    channels: usize,
    out: Option<&[i8]>,
) -> bool {
    let int8 = -128..=127;
    rq.positions_fit(values, channels, out)
        && int8.contains(&rq.activation_min)
        && int8.contains(&rq.activation_max)
}

/// [`requantize_right`]'s assembly, where `right_fits`: with `ROUNDED_NEGATIVE` every sum
/// exact; without, for a floor at or above the zero point (a ReLU), three instructions
/// fewer and only the sums > 0 exact (a sum ≤ 0 gives a value ≤ 0, which the floor
/// replaces).
#[cfg(infer_core_mve)]
#[inline(never)]
fn requantize_right_mve<const ROUNDED_NEGATIVE: bool>(
    rq: &ChannelRequant<'_>,
    values: &mut [u32],
    channels: usize,
    out: Option<&mut [i8]>,
) {
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
    /// The loop, with `$negative` after the doubling high multiply (q0, the shifts in q1).
    macro_rules! requantize_loop {
        ($($negative:literal),*) => {
            // SAFETY: the caller checked (`right_fits`) that `values` holds at least one
            // whole position of `channels` ≥ 1 values and the parameters at least
            // `channels` biases, multipliers (4 bytes each) and shifts. For each of
            // `values.len() / channels` positions, the tail-predicated loop reads the
            // position's `channels` words (word-aligned) and writes as many bytes from
            // byte `position · channels` of `out` (as long, checked), or of `values` (at
            // or before the words, which are read first: narrowing in place), on, and reads `4 · channels` bytes of
            // biases and multipliers and `channels` shifts (byte loads, any alignment);
            // lanes past `channels` neither load nor store. Every register written is
            // declared; it pushes the positions left and pops them.
            unsafe {
                asm!(
                    "vdup.32 q6, r8",
                    "vdup.32 q7, r9",
                    "push {{r5}}",
                    "mov r5, r0",
                    "3:",
                    "mov r0, r12",
                    "mov r8, r1",
                    "mov r9, r2",
                    "mov r3, r10",
                    "dlstp.32 lr, r4",
                    "2:",
                    "vldrw.u32 q0, [r0], #16",
                    "vldrb.u8 q1, [r8], #16",
                    "vadd.i32 q0, q0, q1",
                    "vldrb.u8 q1, [r9], #16",
                    "vqrdmulh.s32 q0, q0, q1",
                    "vldrb.s32 q1, [r3], #4",
                    $($negative,)*
                    "vrshl.s32 q0, q0, q1",
                    "vqadd.s32 q0, q0, r11",
                    "vmax.s32 q0, q0, q6",
                    "vmin.s32 q0, q0, q7",
                    "vstrb.32 q0, [r5], #4",
                    "letp lr, 2b",
                    "add.w r12, r12, r4, lsl #2",
                    // The byte pointer went on four bytes for the last vector, whole or
                    // not: back by `−channels mod 4`.
                    "rsb r0, r4, #0",
                    "and r0, r0, #3",
                    "sub r5, r5, r0",
                    "ldr r0, [sp]",
                    "subs r0, #1",
                    "str r0, [sp]",
                    "bne 3b",
                    "add sp, #4",
                    inout("r8") rq.activation_min => _,
                    inout("r9") rq.activation_max => _,
                    in("r1") rq.bias.as_ptr(),
                    in("r2") rq.multiplier.as_ptr(),
                    in("r10") rq.shift.as_ptr(),
                    in("r4") channels,
                    inout("r5") positions => _,
                    in("r11") rq.output_offset,
                    inout("r12") values.as_mut_ptr() => _,
                    inout("r0") bytes => _,
                    out("r3") _,
                    out("lr") _,
                    out("q0") _,
                    out("q1") _,
                    out("q2") _,
                    out("q6") _,
                    out("q7") _,
                );
            }
        };
    }
    if ROUNDED_NEGATIVE {
        // −1 where the value is negative and the shift not 0 (both sign bits set).
        requantize_loop!(
            "vand q2, q0, q1",
            "vshr.s32 q2, q2, #31",
            "vqadd.s32 q0, q0, q2"
        );
    } else {
        requantize_loop!();
    }
}

/// Four channels of a block of depthwise output pixels with a 3 × 3 window, as
/// [`dw_group`] computes them: `rows × cols` pixels whose windows lie inside the input (a
/// map of int8 values, `col` bytes from one pixel of a channel to the next: its channels,
/// or four in a group's zero-padded copy; channel `l`'s value one byte after channel
/// `l − 1`'s).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DwGroup {
    /// Each channel's weights, row by row (a 3 × 3 window's nine; as parameters of any
    /// window of up to nine taps, its taps in order, the rest 0).
    pub weights: [[i8; 9]; 4],
    /// Each channel's sum before the taps (the bias with the input offset's share folded
    /// in).
    pub bias: [i32; 4],
    /// Each channel's Q31 multiplier (≥ 0).
    pub multiplier: [i32; 4],
    /// Each channel's right shift, `1..=31`.
    pub shift: [i32; 4],
    /// Each channel's output zero point.
    pub zero_point: [i32; 4],
    /// Input bytes from a row of the map to the next.
    pub row: usize,
    /// Input bytes from a pixel of the map to the next in its row.
    pub col: usize,
    /// Input bytes from one pixel's window to the next pixel's in a row.
    pub in_step: usize,
    /// Input bytes from one row of windows to the next.
    pub in_row: usize,
    /// Output bytes from one pixel to the next in a row.
    pub out_step: usize,
    /// Output bytes from one row to the next.
    pub out_row: usize,
    /// Pixels per row.
    pub cols: usize,
    /// Rows.
    pub rows: usize,
}

impl DwGroup {
    /// Whether every byte the block reads, from `origin` on (pixel (0, 0)'s window's first
    /// byte of the first channel), lies inside `input` (`len` bytes) and every output,
    /// from `out_at` on, inside `output` (`out_len` bytes), with at least one pixel and the
    /// steps in `u32`.
    fn fits(&self, len: usize, origin: usize, out_len: usize, out_at: usize) -> bool {
        let last = |row: usize, step: usize| {
            self.rows
                .checked_sub(1)?
                .checked_mul(row)?
                .checked_add(self.cols.checked_sub(1)?.checked_mul(step)?)
        };
        let ends = || -> Option<(usize, usize)> {
            let read = origin
                .checked_add(last(self.in_row, self.in_step)?)?
                .checked_add(self.row.checked_mul(2)?)?
                .checked_add(self.col.checked_mul(2)?)?
                .checked_add(3)?;
            let written = out_at
                .checked_add(last(self.out_row, self.out_step)?)?
                .checked_add(3)?;
            let steps = [self.in_step, self.out_step, self.row, self.col].map(|s| s.checked_mul(4));
            steps
                .iter()
                .all(|s| s.is_some_and(|s| u32::try_from(s).is_ok()))
                .then_some((read, written))
        };
        matches!(ends(), Some((read, written)) if read < len && written < out_len)
    }
}

/// The parameters [`dw_group`]'s assembly loads for one channel (`repr(C)`, word-aligned):
/// the words it turns into vectors when it starts, then those it reads in its loops.
#[cfg(infer_core_mve)]
#[repr(C)]
struct DwChannelAsm {
    /// Input bytes from one pixel's window to the next's (q2–q4, the four pixels' window
    /// rows 0, 1, 2, are `i · in_step + ky · row`).
    in_step: u32,
    /// Input bytes from one row of the map to the next.
    row: u32,
    /// Output bytes from one pixel to the next (q5: `i · out_step`).
    out_step: u32,
    /// q6: the sum before the taps, in each lane.
    bias: i32,
    /// q7: minus the right shift, in each lane.
    shift: i32,
    multiplier: i32,
    zero_point: i32,
    /// From one quad's origin to the next's, less the two window columns stepped over.
    quad_in: i32,
    /// From one window column to the next.
    col: i32,
    quad_out: i32,
    in_row: i32,
    out_row: i32,
    cols: u32,
    rows: u32,
}

// Where the assembly of [`dw_group`] finds the words it reads.
#[cfg(infer_core_mve)]
mod dw_at {
    use super::DwChannelAsm;
    use core::mem::offset_of;
    pub const IN_STEP: usize = offset_of!(DwChannelAsm, in_step);
    pub const ROW: usize = offset_of!(DwChannelAsm, row);
    pub const OUT_STEP: usize = offset_of!(DwChannelAsm, out_step);
    pub const BIAS: usize = offset_of!(DwChannelAsm, bias);
    pub const SHIFT: usize = offset_of!(DwChannelAsm, shift);
    pub const MULTIPLIER: usize = offset_of!(DwChannelAsm, multiplier);
    pub const ZERO_POINT: usize = offset_of!(DwChannelAsm, zero_point);
    pub const QUAD_IN: usize = offset_of!(DwChannelAsm, quad_in);
    pub const COL: usize = offset_of!(DwChannelAsm, col);
    pub const QUAD_OUT: usize = offset_of!(DwChannelAsm, quad_out);
    pub const IN_ROW: usize = offset_of!(DwChannelAsm, in_row);
    pub const OUT_ROW: usize = offset_of!(DwChannelAsm, out_row);
    pub const COLS: usize = offset_of!(DwChannelAsm, cols);
    pub const ROWS: usize = offset_of!(DwChannelAsm, rows);
}

/// Computes the block of `group` for its four channels: channel `l`'s pixel `(i, j)` (row
/// `i < rows`, column `j < cols`) sums `bias + Σ x · w` over its 3 × 3 window, whose tap
/// `(ky, kx)` is byte `origin + l + i · in_row + j · in_step + ky · row + kx · col` of
/// `input`, requantizes it ([`dw_requantize_mve`]) and writes it to byte `out_at + l + i ·
/// out_row + j · out_step` of `output`. Nothing is computed unless the whole block fits the
/// slices: every byte it would read inside `input`, every one it would write inside `output`.
///
/// On an MVE core a loop of assembly per channel over four pixels at a time (the lanes),
/// tail-predicated at a row's end: 37 instructions per four outputs (per tap one gather
/// load and one `VMLA` by the weight, held in a register; the requantization; one scatter
/// store); elsewhere [`dw_group_portable`]. (The MVE cores linked the portable twin as well,
/// for blocks that do not fit, until such blocks computed nothing: some 1,000 bytes of
/// flash.)
#[inline(always)]
pub fn dw_group(group: &DwGroup, input: &[i8], origin: usize, output: &mut [i8], out_at: usize) {
    #[cfg(infer_core_mve)]
    if group.fits(input.len(), origin, output.len(), out_at) {
        dw_group_mve(group, input, origin, output, out_at);
    }
    #[cfg(not(infer_core_mve))]
    dw_group_portable(group, input, origin, output, out_at);
}

/// [`dw_group`]'s assembly, where the block fits.
#[cfg(infer_core_mve)]
#[inline(never)]
fn dw_group_mve(group: &DwGroup, input: &[i8], origin: usize, output: &mut [i8], out_at: usize) {
    // Steps fit a `u32` (`fits`); the quad's are wrapping `i32` bits.
    let word = |n: usize| n as u32;
    let quad = |step: usize, less: usize| (word(4 * step).wrapping_sub(word(less))) as i32;
    let mut p = DwChannelAsm {
        in_step: word(group.in_step),
        row: word(group.row),
        out_step: word(group.out_step),
        bias: 0,
        shift: 0,
        multiplier: 0,
        zero_point: 0,
        quad_in: quad(group.in_step, 2 * group.col),
        col: word(group.col) as i32,
        quad_out: quad(group.out_step, 0),
        in_row: word(group.in_row) as i32,
        out_row: word(group.out_row) as i32,
        cols: word(group.cols),
        rows: 0,
    };
    for (l, w) in group.weights.iter().enumerate() {
        p.bias = group.bias[l];
        p.shift = group.shift[l].wrapping_neg();
        p.multiplier = group.multiplier[l];
        p.zero_point = group.zero_point[l];
        p.rows = word(group.rows);
        // Registers: the nine weights r0–r5, r8–r10; the quad's window origin r11 and output
        // r12; the parameters r6 and a loaded word r7 (both saved); the loop count lr. q0 the
        // sums, q1 the loaded values, q2–q7 the parameters' vectors.
        // SAFETY: the caller checked `fits`: every byte the block reads, `origin + l + i ·
        // in_row + j · in_step + ky · row + kx · col` for every pixel (i < rows, j < cols) and tap, lies
        // inside `input`, and every output byte inside `output`; rows and cols are at least 1.
        // The row loop is tail-predicated, so lanes past `cols` neither load nor store. r6
        // reads and writes `p` (`repr(C)`, aligned, only the row count written), which nothing
        // else borrows. The block saves r6 and r7 (which cannot be operands: LLVM's base and
        // frame pointers) and pops all it pushes; every other register it writes is declared.
        unsafe {
            asm!(
                "push {{r6, r7}}",
                "mov r6, lr",
                // q2 = 0, 1, 2, 3; the offsets of the outputs, then of the window rows.
                "mov lr, #0",
                "vidup.u32 q2, lr, #1",
                "ldr r7, [r6, #{out_step}]",
                "vmul.i32 q5, q2, r7",
                "ldr r7, [r6, #{in_step}]",
                "vmul.i32 q2, q2, r7",
                "ldr r7, [r6, #{row}]",
                "vadd.i32 q3, q2, r7",
                "vadd.i32 q4, q3, r7",
                "ldr r7, [r6, #{bias}]",
                "vdup.32 q6, r7",
                "ldr r7, [r6, #{shift}]",
                "vdup.32 q7, r7",
                "3:",
                "push {{r11, r12}}",
                "ldr r7, [r6, #{cols}]",
                "dlstp.32 lr, r7",
                "2:",
                "vmov q0, q6",
                "vldrb.s32 q1, [r11, q2]",
                "vmla.s32 q0, q1, r0",
                "vldrb.s32 q1, [r11, q3]",
                "vmla.s32 q0, q1, r3",
                "vldrb.s32 q1, [r11, q4]",
                "vmla.s32 q0, q1, r8",
                "ldr r7, [r6, #{col}]",
                "add r11, r7",
                "vldrb.s32 q1, [r11, q2]",
                "vmla.s32 q0, q1, r1",
                "vldrb.s32 q1, [r11, q3]",
                "vmla.s32 q0, q1, r4",
                "vldrb.s32 q1, [r11, q4]",
                "vmla.s32 q0, q1, r9",
                "add r11, r7",
                "vldrb.s32 q1, [r11, q2]",
                "vmla.s32 q0, q1, r2",
                "vldrb.s32 q1, [r11, q3]",
                "vmla.s32 q0, q1, r5",
                "vldrb.s32 q1, [r11, q4]",
                "vmla.s32 q0, q1, r10",
                // The requantization: the doubling high multiply, one less where negative,
                // the rounding shift, the zero point, saturated to int8 in two narrowings.
                "ldr r7, [r6, #{multiplier}]",
                "vqrdmulh.s32 q0, q0, r7",
                "vshr.s32 q1, q0, #31",
                "vadd.i32 q0, q0, q1",
                "vrshl.s32 q0, q0, q7",
                "ldr r7, [r6, #{zero_point}]",
                "vadd.i32 q0, q0, r7",
                "vqmovnb.s32 q0, q0",
                "vqmovnb.s16 q0, q0",
                "vstrb.32 q0, [r12, q5]",
                "ldr r7, [r6, #{quad_in}]",
                "add r11, r7",
                "ldr r7, [r6, #{quad_out}]",
                "add r12, r7",
                "letp lr, 2b",
                "pop {{r11, r12}}",
                "ldr r7, [r6, #{in_row}]",
                "add r11, r7",
                "ldr r7, [r6, #{out_row}]",
                "add r12, r7",
                "ldr r7, [r6, #{rows}]",
                "subs r7, #1",
                "str r7, [r6, #{rows}]",
                "bne 3b",
                "pop {{r6, r7}}",
                in("r0") i32::from(w[0]),
                in("r1") i32::from(w[1]),
                in("r2") i32::from(w[2]),
                in("r3") i32::from(w[3]),
                in("r4") i32::from(w[4]),
                in("r5") i32::from(w[5]),
                in("r8") i32::from(w[6]),
                in("r9") i32::from(w[7]),
                in("r10") i32::from(w[8]),
                inout("r11") input.as_ptr().wrapping_add(origin + l) => _,
                inout("r12") output.as_mut_ptr().wrapping_add(out_at + l) => _,
                inout("lr") core::ptr::from_mut(&mut p) => _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
                out("q3") _,
                out("q4") _,
                out("q5") _,
                out("q6") _,
                out("q7") _,
                in_step = const dw_at::IN_STEP,
                row = const dw_at::ROW,
                out_step = const dw_at::OUT_STEP,
                bias = const dw_at::BIAS,
                shift = const dw_at::SHIFT,
                multiplier = const dw_at::MULTIPLIER,
                zero_point = const dw_at::ZERO_POINT,
                quad_in = const dw_at::QUAD_IN,
                col = const dw_at::COL,
                quad_out = const dw_at::QUAD_OUT,
                in_row = const dw_at::IN_ROW,
                out_row = const dw_at::OUT_ROW,
                cols = const dw_at::COLS,
                rows = const dw_at::ROWS,
            );
        }
    }
}

/// [`dw_group`]'s requantization of a sum `acc` as its assembly computes it: `VQRDMULH`
/// by the multiplier (the saturating rounding doubling high multiply), one less if that is
/// negative, `VRSHL` right by the shift (ties rounded up), the zero point added, saturated
/// to int8. For `|acc| < 2^30` this is [`super::dsp::dw_requantize`] of the doubled sum,
/// TFLite's value.
pub fn dw_requantize_mve(acc: i32, multiplier: i32, shift: i32, zero_point: i32) -> i8 {
    let product = 2 * i64::from(acc) * i64::from(multiplier) + (1 << 31);
    let high = (product >> 32).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    let x = high.wrapping_add(high >> 31);
    let s = shift.clamp(0, 31);
    let shifted = if s == 0 {
        x
    } else {
        ((i64::from(x) + (1 << (s - 1))) >> s) as i32
    };
    shifted.wrapping_add(zero_point).clamp(-128, 127) as i8
}

/// [`dw_group`] in plain integer arithmetic (the reference the assembly is tested against,
/// and the code elsewhere): nothing unless the whole block fits, as there.
pub fn dw_group_portable(
    group: &DwGroup,
    input: &[i8],
    origin: usize,
    output: &mut [i8],
    out_at: usize,
) {
    if !group.fits(input.len(), origin, output.len(), out_at) {
        return;
    }
    let at = |start: usize, row: usize, step: usize, i: usize, j: usize| {
        start
            .wrapping_add(row.wrapping_mul(i))
            .wrapping_add(step.wrapping_mul(j))
    };
    for (l, weights) in group.weights.iter().enumerate() {
        for i in 0..group.rows {
            for j in 0..group.cols {
                let pixel = at(origin + l, group.in_row, group.in_step, i, j);
                let mut acc = group.bias[l];
                for (t, &w) in weights.iter().enumerate() {
                    let tap = pixel.wrapping_add((t / 3) * group.row + (t % 3) * group.col);
                    if let Some(&x) = input.get(tap) {
                        acc = acc.wrapping_add(i32::from(x) * i32::from(w));
                    }
                }
                let out = at(out_at + l, group.out_row, group.out_step, i, j);
                if let Some(out) = output.get_mut(out) {
                    let (m, s, z) = (group.multiplier[l], group.shift[l], group.zero_point[l]);
                    *out = dw_requantize_mve(acc, m, s, z);
                }
            }
        }
    }
}

/// [`super::add::AddTables::add_into`]' assembly on an MVE core: each value of `values`
/// added to the byte of `other` at its place, in place, over the shorter of the two, from
/// the tables `ta` and `tb` of each input's scaled values (256 words each, indexed by the
/// value's byte) and the output requantization of `p`. False (nothing done) where it cannot
/// run: tables shorter than 256 words, or a left shift.
#[cfg(infer_core_mve)]
#[inline(never)]
pub(crate) fn add_into(
    ta: &[u32],
    tb: &[u32],
    p: &super::add::AddParams,
    values: &[i8],
    other: &mut [i8],
) -> bool {
    if ta.len() < 256 || tb.len() < 256 || p.output_shift > 0 {
        return false;
    }
    let n = values.len().min(other.len());
    if n == 0 {
        return true;
    }
    // Registers: the values r0, the other operand r1, the tables r2 r3, the count, then the
    // loop, lr; the multiplier r5, the zero point r4; q4, q5 and q7 the floor, the ceiling
    // and the shift in every lane.
    // SAFETY: the tail-predicated loop runs over `n` lanes (lanes past it neither load nor
    // store): it reads `n` bytes of `values` and reads and writes `n` bytes of `other` (both
    // at least `n` long), and gathers words of `ta` and `tb` at indices 0..=255 (a byte
    // loaded as one; both tables at least 256 words, checked above, word-aligned). Every
    // register written is declared; no stack.
    unsafe {
        asm!(
            "vdup.32 q4, {floor}",
            "vdup.32 q5, {ceiling}",
            "vdup.32 q7, {shift}",
            "dlstp.32 lr, {n}",
            "2:",
            "vldrb.u32 q0, [r0], #4",
            "vldrb.u32 q1, [r1]",
            "vldrw.u32 q2, [r2, q0, uxtw #2]",
            "vldrw.u32 q3, [r3, q1, uxtw #2]",
            "vadd.i32 q0, q2, q3",
            "vqrdmulh.s32 q0, q0, r5",
            // −1 where the value is negative and the shift not 0 (both sign bits set).
            "vand q1, q0, q7",
            "vshr.s32 q1, q1, #31",
            "vqadd.s32 q0, q0, q1",
            "vrshl.s32 q0, q0, q7",
            "vqadd.s32 q0, q0, r4",
            "vmax.s32 q0, q0, q4",
            "vmin.s32 q0, q0, q5",
            "vstrb.32 q0, [r1], #4",
            "letp lr, 2b",
            floor = in(reg) i32::from(p.min),
            ceiling = in(reg) i32::from(p.max),
            shift = in(reg) p.output_shift,
            n = in(reg) n,
            inout("r0") values.as_ptr() => _,
            inout("r1") other.as_mut_ptr() => _,
            in("r2") ta.as_ptr(),
            in("r3") tb.as_ptr(),
            in("r4") p.output_zero_point,
            in("r5") p.output_multiplier,
            out("lr") _,
            out("q0") _,
            out("q1") _,
            out("q2") _,
            out("q3") _,
            out("q4") _,
            out("q5") _,
            out("q7") _,
            options(nostack),
        );
    }
    true
}

/// What [`dense_rows_i8`] computes: one position's `channels` int8 values as they are
/// (`values`), the dense layer's weight rows from that position on (row `u` is
/// `weights[u · stride..][..channels]`, int8 bytes, any alignment), and the `offset` added
/// to every value.
#[derive(Debug, Clone, Copy)]
pub struct DenseRowsI8<'a> {
    /// The values, as they are.
    pub values: &'a [i8],
    /// The rows, from the position's first input on.
    pub weights: &'a [u8],
    /// Values of the position.
    pub channels: usize,
    /// Bytes from one row to the next.
    pub stride: usize,
    /// Added to every value (minus the layer's input zero point, `-127..=128`).
    pub offset: i32,
}

impl DenseRowsI8<'_> {
    /// Whether the sizes fit the slices and `acc` (whole pairs of units): [`dense_rows_i8`]'
    /// precondition.
    pub(crate) fn fits(&self, acc: &[u32]) -> bool {
        let units = acc.len() / 2 * 2;
        self.channels > 0
            && self.stride >= self.channels
            && units > 0
            && self.values.len() >= self.channels
            && self.weights.len() >= (units - 1) * self.stride + self.channels
    }
}

/// A streamed dense layer's step from int8 values ([`DenseRowsI8`]): adds each unit's
/// `Σ (x + offset) · w` (as `Σ x · w + offset · Σ w`, the same modulo 2³²) into `acc` (one
/// per unit; an odd last unit is left alone), wrapping. Computes nothing if a size does
/// not fit.
///
/// On an MVE core blocks of assembly. With offset 0 (a caller that added `offset · Σ w`
/// into `acc` itself) first the units four at a time: sixteen values of four units (64
/// multiply-accumulates) in ten instructions (the values, per unit its weights and one
/// `VMLADAVA.S8`, the loop end; the last sixteen tail-predicated), 16 per quad of units
/// around them. Then, and with any other offset, the units two at a time: sixteen values of
/// two units in eight instructions (the values, per unit its weights, one `VMLADAVA.S8`
/// and one `VADDVA.S8`, the loop end), 17 per pair around them. Elsewhere
/// [`dense_rows_i8_portable`].
#[cfg_attr(infer_core_mve, inline(never))]
#[cfg_attr(not(infer_core_mve), inline(always))]
pub fn dense_rows_i8(rows: &DenseRowsI8<'_>, acc: &mut [u32]) {
    if !rows.fits(acc) {
        return;
    }
    #[cfg(infer_core_mve)]
    {
        let ch = rows.channels;
        // Units four at a time where the offset is 0; the rest in pairs.
        let quads = if rows.offset == 0 { acc.len() / 4 } else { 0 };
        if quads > 0 {
            // Registers: the four units' sums r0 r2 r4 r8 (`VMLADAVA` takes even ones), their
            // rows' pointers r1 r3 r5 r9, the values' pointer r11, the values r12, the
            // sums' pointer r10. On the stack: quads left [sp], the step from where a row's
            // pointer ends (it overshoots to a whole sixteen) to the row four on [sp, #4],
            // the values' count [sp, #8].
            // SAFETY: per quad of units, r11 reads the `channels` bytes of `values`, r1, r3, r5
            // and r9 read `channels` bytes of rows 4i to 4i + 3 (the last row ends within
            // `weights`, checked above as 4 · quads ≤ units; byte loads, lanes past
            // `channels` predicated off), r10 reads and writes four words of `acc` (checked
            // above; word-aligned as LDRD/STRD need). The block pops the three words it
            // pushes; every register written is declared.
            unsafe {
                asm!(
                    "push {{r0, r2, r4}}",
                    "3:",
                    "ldrd r0, r2, [r10]",
                    "ldrd r4, r8, [r10, #8]",
                    "ldr r11, [sp, #8]",
                    "dlstp.8 lr, r11",
                    "mov r11, r12",
                    "2:",
                    "vldrb.u8 q0, [r11], #16",
                    "vldrb.u8 q1, [r1], #16",
                    "vmladava.s8 r0, q0, q1",
                    "vldrb.u8 q2, [r3], #16",
                    "vmladava.s8 r2, q0, q2",
                    "vldrb.u8 q1, [r5], #16",
                    "vmladava.s8 r4, q0, q1",
                    "vldrb.u8 q2, [r9], #16",
                    "vmladava.s8 r8, q0, q2",
                    "letp lr, 2b",
                    "strd r0, r2, [r10], #8",
                    "strd r4, r8, [r10], #8",
                    "ldr r11, [sp, #4]",
                    "add r1, r11",
                    "add r3, r11",
                    "add r5, r11",
                    "add r9, r11",
                    "ldr r11, [sp]",
                    "subs r11, #1",
                    "str r11, [sp]",
                    "bne 3b",
                    "add sp, #12",
                    inout("r0") quads => _,
                    inout("r2") (4 * rows.stride).wrapping_sub(ch.div_ceil(16) * 16) => _,
                    inout("r4") ch => _,
                    inout("r1") rows.weights.as_ptr() => _,
                    inout("r3") rows.weights.as_ptr().wrapping_add(rows.stride) => _,
                    inout("r5") rows.weights.as_ptr().wrapping_add(2 * rows.stride) => _,
                    inout("r9") rows.weights.as_ptr().wrapping_add(3 * rows.stride) => _,
                    in("r12") rows.values.as_ptr(),
                    inout("r10") acc.as_mut_ptr() => _,
                    out("r8") _,
                    out("r11") _,
                    out("lr") _,
                    out("q0") _,
                    out("q1") _,
                    out("q2") _,
                );
            }
        }
        let (acc, weights) = (
            acc.get_mut(4 * quads..).unwrap_or_default(),
            rows.weights
                .get(4 * quads * rows.stride..)
                .unwrap_or_default(),
        );
        if acc.len() < 2 {
            return;
        }
        // On the stack: pairs left [sp], the offset [sp, #4], the step from where a row's
        // pointer ends (it overshoots to a whole sixteen) to the row after next [sp, #8].
        // SAFETY: per pair of units, r9 reads the `channels` bytes of `values`, r1 and r3
        // read `channels` bytes of rows 2i and 2i + 1 (the last row ends within `weights`,
        // checked above; byte loads, lanes past `channels` predicated off), r12 walks `acc`
        // two words per pair (checked above; word-aligned as LDRD/STRD need). The block
        // pops the three words it pushes; every register written is declared.
        unsafe {
            asm!(
                "push {{r0, r2, r4}}",
                "3:",
                "ldrd r0, r2, [r12]",
                "movs r4, #0",
                "mov.w r8, #0",
                "mov r9, r5",
                "dlstp.8 lr, r11",
                "2:",
                "vldrb.u8 q0, [r9], #16",
                "vldrb.u8 q1, [r1], #16",
                "vmladava.s8 r0, q0, q1",
                "vaddva.s8 r4, q1",
                "vldrb.u8 q2, [r3], #16",
                "vmladava.s8 r2, q0, q2",
                "vaddva.s8 r8, q2",
                "letp lr, 2b",
                "ldr r9, [sp, #4]",
                "mla r0, r4, r9, r0",
                "mla r2, r8, r9, r2",
                "strd r0, r2, [r12], #8",
                "ldr r9, [sp, #8]",
                "add r1, r9",
                "add r3, r9",
                "ldr r9, [sp]",
                "subs r9, #1",
                "str r9, [sp]",
                "bne 3b",
                "add sp, #12",
                inout("r0") acc.len() / 2 => _,
                inout("r2") rows.offset => _,
                inout("r4") (2 * rows.stride).wrapping_sub(ch.div_ceil(16) * 16) => _,
                inout("r1") weights.as_ptr() => _,
                inout("r3") weights.as_ptr().wrapping_add(rows.stride) => _,
                in("r5") rows.values.as_ptr(),
                in("r11") ch,
                inout("r12") acc.as_mut_ptr() => _,
                out("r8") _,
                out("r9") _,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
            );
        }
    }
    #[cfg(not(infer_core_mve))]
    dense_rows_i8_portable(rows, acc);
}

/// [`dense_rows_i8`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dense_rows_i8_portable(rows: &DenseRowsI8<'_>, acc: &mut [u32]) {
    if !rows.fits(acc) {
        return;
    }
    let units = acc.len() / 2 * 2;
    let values = rows.values.get(..rows.channels).unwrap_or_default();
    for (u, acc) in acc.iter_mut().take(units).enumerate() {
        let row = rows.weights.get(u * rows.stride..).unwrap_or_default();
        let row = row.get(..rows.channels).unwrap_or_default();
        *acc = acc.wrapping_add(dot_i8_offset(values, rows.offset, row) as u32);
    }
}

/// Runs of a window to put into one pixel's share of an int8 quad patch
/// ([`put_rows_i8`]): `rows` runs of `len` bytes, `stride` bytes apart in the source, the
/// first run's first byte tap `tap` and each next run's `tap_step` taps on (a window's
/// rows: its kernel rows' columns inside the input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TapRuns {
    /// How many runs.
    pub rows: usize,
    /// Bytes in each run.
    pub len: usize,
    /// Bytes from one run's start to the next's in the source.
    pub stride: usize,
    /// The tap of the first run's first byte.
    pub tap: usize,
    /// Taps from one run's first to the next's.
    pub tap_step: usize,
}

impl TapRuns {
    /// A window's `rows` runs of `len` bytes, `stride` bytes apart, as its taps
    /// `0..rows · len` (each kernel row one run).
    pub const fn window(rows: usize, len: usize, stride: usize) -> Self {
        Self {
            rows,
            len,
            stride,
            tap: 0,
            tap_step: len,
        }
    }

    /// Whether the runs, read from a source of `src` bytes, go into pixel `pixel` of a patch
    /// of `patch` bytes: at least one run of at least one byte, the last run's end within
    /// the source, the last tap's byte within the patch (the bytes of a pixel's taps rise
    /// with the tap), the pixel one of four, no overflow.
    pub fn fit(&self, src: usize, pixel: usize, patch: usize) -> bool {
        self.reach(pixel)
            .is_some_and(|(read, byte)| read <= src && byte < patch)
    }

    /// The bytes of the source the runs read and the byte of their last tap in pixel
    /// `pixel`: `None` without a run of at least one byte, for a pixel past the four, or on
    /// overflow.
    #[inline(always)]
    fn reach(&self, pixel: usize) -> Option<(usize, usize)> {
        let last = |step: usize| self.rows.checked_sub(1)?.checked_mul(step);
        let read = last(self.stride)?.checked_add(self.len)?;
        let tap = last(self.tap_step)?
            .checked_add(self.tap)?
            .checked_add(self.len.checked_sub(1)?)?;
        (tap < MAX_PATCH_TAPS && pixel < 4).then(|| (read, tap_byte(tap, pixel)))
    }
}

/// One run of [`put_rows_i8`] and [`put_quad_i8`]: `{len}` bytes from `{src}` (which
/// steps past them) as taps `{t}..` of the pixel whose first lane `{base}` points at, a
/// predicated piece up to the end of the first block of sixteen taps, whole blocks (the next
/// 48 bytes on), a predicated last piece; `{piece}`, `{dst}`, `{left}` and `q0` scratch.
#[cfg(infer_core_mve)]
macro_rules! put_run {
    () => {
        concat!(
            // This run's first byte: block `t / 16`, lane `t % 16` of the pixel's sixteen.
            "and {piece}, {t}, #15\n",
            "lsrs {dst}, {t}, #4\n",
            "add {dst}, {base}, {dst}, lsl #6\n",
            "add {dst}, {piece}\n",
            // The piece up to the end of the first block.
            "rsb {piece}, {piece}, #16\n",
            "cmp {piece}, {len}\n",
            "it hi\n",
            "movhi {piece}, {len}\n",
            "vctp.8 {piece}\n",
            "vpstt\n",
            "vldrbt.u8 q0, [{src}]\n",
            "vstrbt.8 q0, [{dst}]\n",
            "add {src}, {piece}\n",
            "subs {left}, {len}, {piece}\n",
            "beq 3f\n",
            // It ended its block: this pixel's lanes of the next one. Whole blocks.
            "add {dst}, {piece}\n",
            "add {dst}, #48\n",
            "lsrs {piece}, {left}, #4\n",
            "beq 4f\n",
            "2:\n",
            "vldrb.u8 q0, [{src}], #16\n",
            "vstrb.8 q0, [{dst}], #64\n",
            "subs {piece}, #1\n",
            "bne 2b\n",
            // The last piece.
            "4:\n",
            "ands {left}, {left}, #15\n",
            "beq 3f\n",
            "vctp.8 {left}\n",
            "vpstt\n",
            "vldrbt.u8 q0, [{src}]\n",
            "vstrbt.8 q0, [{dst}]\n",
            "add {src}, {left}\n",
            "3:\n",
        )
    };
}

/// Puts the runs `runs` of `src` into pixel `pixel` (0 to 3) of an int8 quad patch
/// ([`QuadConvI8`]'s layout: tap `t` at byte `64 · (t / 16) + 16 · pixel + t % 16`).
/// Nothing is written unless they fit ([`TapRuns::fit`]: the pixel, every run within
/// `src`, every tap within `patch`).
///
/// On an MVE core one block of assembly, a loop over the runs: a predicated vector load
/// and store for each run's piece up to its first block's end and for its last piece, a
/// loop of four instructions per whole block between (the next block 48 bytes on). A
/// window of three runs of 24 so took some 130 instructions where a call per run, with
/// the slicing around it, took some 250 on the Cortex-M55. Elsewhere
/// [`put_rows_i8_portable`].
#[inline(always)]
pub fn put_rows_i8(src: &[i8], runs: &TapRuns, pixel: usize, patch: &mut [i8]) {
    #[cfg(infer_core_mve)]
    if runs.fit(src.len(), pixel, patch.len()) {
        // SAFETY: `rows` ≥ 1 and `len` ≥ 1 (`fit`). Run `r` reads bytes `r · stride ..
        // r · stride + len` of `src` (the source pointer steps `len` through the run, then
        // `stride - len`, wrapping), the last run's end within `src` (`fit`). Each run's
        // pieces cover its taps, each within one block of sixteen taps (`VCTP` enables the
        // piece's first `len` ≤ 16 byte lanes): the predicated stores write bytes
        // `tap_byte(u, pixel)` for those taps only, the last run's last within `patch`
        // (`fit`), so every one is (they rise with the tap). Byte accesses, no alignment
        // needed. Registers written are declared; no stack.
        unsafe {
            asm!(
                "1:",
                put_run!(),
                // The next run.
                "add {src}, {skip}",
                "add {t}, {tap_step}",
                "subs {rows}, #1",
                "bne 1b",
                src = inout(reg) src.as_ptr() => _,
                base = in(reg) patch.as_mut_ptr().wrapping_add(16 * pixel),
                t = inout(reg) runs.tap => _,
                len = in(reg) runs.len,
                rows = inout(reg) runs.rows => _,
                skip = in(reg) runs.stride.wrapping_sub(runs.len),
                tap_step = in(reg) runs.tap_step,
                piece = out(reg) _,
                dst = out(reg) _,
                left = out(reg) _,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(infer_core_mve))]
    put_rows_i8_portable(src, runs, pixel, patch);
}

/// The taps an int8 quad patch may have for [`put_rows_i8`], [`put_quad_i8`] and
/// [`fill_taps_i8`]: a tap's byte (`tap_byte`, at most 4 · tap + 63) and a count of taps
/// (a signed one, in [`fill_taps_i8`]) cannot overflow below it.
const MAX_PATCH_TAPS: usize = 1 << 24;

/// The byte of tap `t` of pixel `pixel` in an int8 quad patch.
#[inline(always)]
const fn tap_byte(t: usize, pixel: usize) -> usize {
    64 * (t / 16) + 16 * pixel + t % 16
}

/// [`put_rows_i8`] byte by byte (the reference the assembly is tested against, and the
/// code elsewhere).
#[inline(always)]
pub fn put_rows_i8_portable(src: &[i8], runs: &TapRuns, pixel: usize, patch: &mut [i8]) {
    if !runs.fit(src.len(), pixel, patch.len()) {
        return;
    }
    for r in 0..runs.rows {
        let run = src.get(r * runs.stride..).unwrap_or_default();
        let first = runs.tap + r * runs.tap_step;
        for (i, &value) in run.iter().take(runs.len).enumerate() {
            if let Some(byte) = patch.get_mut(tap_byte(first + i, pixel)) {
                *byte = value;
            }
        }
    }
}

/// Puts up to four windows of `src` into an int8 quad patch ([`put_rows_i8`]'s layout):
/// window `p`, from byte `offsets[p]` of `src` on (`usize::MAX`: none, the pixel left as it
/// is), into pixel `p`, each as `runs`, runs of consecutive taps (`tap_step` = `len`: whole
/// kernel rows, as [`TapRuns::window`]). Nothing is written unless every window fits
/// ([`TapRuns::fit`]) and the taps are consecutive.
///
/// On an MVE core one block of assembly for the four (each run as in [`put_rows_i8`]),
/// where a call of [`put_rows_i8`] for each pixel, with the checks around it, took some 120
/// instructions more a pixel on the Cortex-M55; elsewhere [`put_quad_i8_portable`].
#[cfg_attr(infer_core_mve, inline(never))]
pub fn put_quad_i8(src: &[i8], offsets: [usize; 4], runs: &TapRuns, patch: &mut [i8]) {
    #[cfg(infer_core_mve)]
    if quad_fits(src.len(), &offsets, runs, patch.len()) {
        // The windows' first bytes (null: no window).
        let starts = offsets.map(|o| match o {
            usize::MAX => core::ptr::null(),
            o => src.as_ptr().wrapping_add(o),
        });
        // SAFETY: `rows` ≥ 1 and `len` ≥ 1, taps `tap + r · len` (`quad_fits`: the taps
        // are consecutive, their end `tap + rows · len` one past the last, which `fit`
        // bounds; no overflow). `starts` holds four pointers, read one at a time (`lr`
        // counts them): null ones are skipped, the others point into `src` at least the
        // runs' reach before its end (`quad_fits`). For each window, run `r` reads bytes
        // `r · stride .. r · stride + len` from its start (the source pointer steps `len`
        // through the run, then `stride - len`, wrapping), and writes its taps as
        // [`put_rows_i8`] writes them into the window's pixel, the last tap's byte within
        // `patch` (`quad_fits`, for the last pixel, whose bytes lie past the others'). Byte
        // accesses, no alignment needed. Registers written are declared; no stack.
        unsafe {
            asm!(
                "5:",
                "ldr {src}, [{starts}], #4",
                "cmp {src}, #0",
                "beq 6f",
                "mov {t}, {tap}",
                "1:",
                put_run!(),
                // The next run.
                "add {src}, {skip}",
                "add {t}, {len}",
                "cmp {t}, {end}",
                "blo 1b",
                // The next window.
                "6:",
                "add {base}, #16",
                "subs lr, #1",
                "bne 5b",
                starts = inout(reg) starts.as_ptr() => _,
                src = out(reg) _,
                base = inout(reg) patch.as_mut_ptr() => _,
                t = out(reg) _,
                tap = in(reg) runs.tap,
                len = in(reg) runs.len,
                end = in(reg) runs.tap + runs.rows * runs.len,
                skip = in(reg) runs.stride.wrapping_sub(runs.len),
                piece = out(reg) _,
                dst = out(reg) _,
                left = out(reg) _,
                inout("lr") 4 => _,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(infer_core_mve))]
    put_quad_i8_portable(src, offsets, runs, patch);
}

/// Whether [`put_quad_i8`] takes its windows: `runs` of consecutive taps (`tap_step` =
/// `len`: whole kernel rows) that fit ([`TapRuns::fit`]) the last pixel of a patch of
/// `patch` bytes (whose bytes lie past the others') from every offset of a source of `src`
/// bytes.
fn quad_fits(src: usize, offsets: &[usize; 4], runs: &TapRuns, patch: usize) -> bool {
    let Some((read, byte)) = runs.reach(3) else {
        return false;
    };
    let fits = |&o: &usize| o == usize::MAX || src.checked_sub(o).is_some_and(|n| n >= read);
    runs.tap_step == runs.len && byte < patch && offsets.iter().all(fits)
}

/// [`put_quad_i8`] byte by byte (the reference the assembly is tested against, and the
/// code elsewhere).
#[inline(always)]
pub fn put_quad_i8_portable(src: &[i8], offsets: [usize; 4], runs: &TapRuns, patch: &mut [i8]) {
    if !quad_fits(src.len(), &offsets, runs, patch.len()) {
        return;
    }
    for (pixel, o) in offsets.into_iter().enumerate() {
        if let Some(window) = src.get(o..) {
            put_rows_i8_portable(window, runs, pixel, patch);
        }
    }
}

/// Fills taps `0..taps` of pixel `pixel` (0 to 3) of an int8 quad patch with `fill` (a
/// window's padding: the input zero point). Nothing is written unless the pixel is one of
/// four and every tap lies within `patch`.
///
/// On an MVE core a loop of a predicated store per block of sixteen taps; elsewhere
/// [`fill_taps_i8_portable`].
#[inline(always)]
pub fn fill_taps_i8(fill: i8, taps: usize, pixel: usize, patch: &mut [i8]) {
    #[cfg(infer_core_mve)]
    if fill_fits(taps, pixel, patch.len()) {
        // SAFETY: block `b` (while taps are left) stores the pixel's lanes of taps
        // `16 · b ..` up to the count left (`VCTP` enables the first `min(left, 16)` byte
        // lanes), bytes `tap_byte(t, pixel)` for taps `t < taps`, the last within `patch`
        // (`fill_fits`), so every one is. `taps` ≥ 1 and at most `MAX_PATCH_TAPS` (the
        // signed count left cannot overflow). Byte stores, no alignment needed. Registers
        // written are declared; no stack.
        unsafe {
            asm!(
                "vdup.8 q0, {fill}",
                "2:",
                "vctp.8 {left}",
                "vpst",
                "vstrbt.8 q0, [{dst}], #64",
                "subs {left}, #16",
                "bgt 2b",
                fill = in(reg) i32::from(fill),
                left = inout(reg) taps => _,
                dst = inout(reg) patch.as_mut_ptr().wrapping_add(16 * pixel) => _,
                out("q0") _,
                options(nostack),
            );
        }
    }
    #[cfg(not(infer_core_mve))]
    fill_taps_i8_portable(fill, taps, pixel, patch);
}

/// Whether [`fill_taps_i8`] takes `taps` taps of pixel `pixel` of a patch of `patch` bytes.
fn fill_fits(taps: usize, pixel: usize, patch: usize) -> bool {
    pixel < 4 && (1..=MAX_PATCH_TAPS).contains(&taps) && tap_byte(taps - 1, pixel) < patch
}

/// [`fill_taps_i8`] byte by byte (the reference the assembly is tested against, and the
/// code elsewhere).
#[inline(always)]
pub fn fill_taps_i8_portable(fill: i8, taps: usize, pixel: usize, patch: &mut [i8]) {
    if !fill_fits(taps, pixel, patch.len()) {
        return;
    }
    for t in 0..taps {
        if let Some(byte) = patch.get_mut(tap_byte(t, pixel)) {
            *byte = fill;
        }
    }
}

/// What [`quad_filters_i8`] computes: four pixels' int8 patches without their input offset
/// (`patch`: for tap `t` of pixel `p`, byte `64 · (t / 16) + 16 · p + t % 16`, blocks of
/// sixteen taps of the four pixels in turn; the last block's bytes past `taps` unused),
/// `filters` filters' int8 rows of `taps` bytes one after the other in `weights`, each
/// filter's offset term `offset · Σ w` (`offset_terms`, [`offset_terms`]), and `stride`, the
/// distance in values between the pixels' results (0: the four fold into one, a pool
/// window; otherwise at least `filters`, so that no pixel's results overlap another's).
#[derive(Debug, Clone, Copy)]
pub struct QuadConvI8<'a> {
    /// The int8 quad patch.
    pub patch: &'a [i8],
    /// The filters' rows.
    pub weights: &'a [u8],
    /// Taps per patch.
    pub taps: usize,
    /// Filters.
    pub filters: usize,
    /// Per filter, the input offset times the sum of its weights (as `u32` bits).
    pub offset_terms: &'a [u32],
    /// Values from one pixel's results to the next pixel's.
    pub stride: usize,
}

/// Writes each filter's offset term ([`row_offset_terms`]) into `terms`, for the `filters`
/// rows of `taps` int8 weights in `weights`: what [`QuadConvI8`] adds to a filter's sums of
/// the int8 values as they are. Terms past the rows are left alone.
pub fn offset_terms(weights: &[u8], taps: usize, offset: i32, terms: &mut [u32]) {
    for (term, t) in terms
        .iter_mut()
        .zip(row_offset_terms(weights, taps, offset))
    {
        *term = t;
    }
}

/// Each whole row's offset term, `offset · Σ w` (wrapping, as `u32` bits), for rows of `len`
/// int8 weights (`weights`) whose input offset is `offset`: a conv's filters' (computed at
/// every inference, [`offset_terms`]) or a dense layer's units' (what a build prepares
/// beside the model, `crate::stack::prepared`, for the layer's sums to start from, so that
/// its steps take the int8 values as they are).
pub fn row_offset_terms(weights: &[u8], len: usize, offset: i32) -> impl Iterator<Item = u32> + '_ {
    weights.chunks_exact(len.max(1)).map(move |row| {
        let sum = row
            .iter()
            .fold(0i32, |a, &w| a.wrapping_add(i32::from(w as i8)));
        offset.wrapping_mul(sum) as u32
    })
}

/// Whether this build's dense layers may take their offset terms alone
/// ([`row_offset_terms`], prepared beside the model, `crate::stack::prepared`): on MVE
/// cores (and in the unit tests). Their sums then start from the terms, and
/// [`dense_rows_i8`] takes the values with offset 0, four units at a time.
pub const TERMS_ALONE: bool = cfg!(any(infer_core_mve, test));

impl QuadConvI8<'_> {
    /// Bytes of a quad patch of `taps` taps.
    pub const fn patch_bytes(taps: usize) -> usize {
        taps.div_ceil(16) * 64
    }

    /// Whether the sizes fit the slices and `values`: [`quad_filters_i8`]' precondition.
    pub(crate) fn fits(&self, values: &[u32]) -> bool {
        self.taps > 0
            && self.filters > 0
            && self.offset_terms.len() >= self.filters
            && self.patch.len() >= Self::patch_bytes(self.taps)
            && self.weights.len() / self.taps >= self.filters
            && values.len() > 3 * self.stride + self.filters - 1
    }
}

/// Bytes of an int8 quad patch of up to 16 taps ([`QuadConvI8::patch_bytes`]).
pub const QUAD_I8_BYTES: usize = 64;

/// Puts `count` one-channel 3 × 3 windows of a row of output pixels into pixels
/// `first..first + count` of an int8 quad patch of nine taps ([`QuadConvI8`]'s layout:
/// pixel `p`'s taps at bytes `16p..16p + 9`, the rest of its block left alone): window
/// `k`'s row `ky` is `rows[ky][k · step..][..3]`, its values as they are. Returns the values
/// put, each XOR-ed with `zero_point`, OR-ed (0: every value the zero point, a
/// background). Each window's rows must hold one byte past it (the assembly's word loads
/// read it), as for [`super::dsp::gather_3x3_run`]: windows from the first that lacks it,
/// or past the quad, are not written.
///
/// On an MVE core one loop of assembly, 20 instructions a window (a word load and store a
/// row), where the bytes one by one took some 150 on the Cortex-M55; elsewhere
/// [`put_3x3_run_i8_portable`].
#[inline(always)]
pub fn put_3x3_run_i8(
    rows: [&[i8]; 3],
    step: usize,
    zero_point: i8,
    (first, count): (usize, usize),
    patch: &mut [i8; QUAD_I8_BYTES],
) -> u32 {
    // (The portable twin counts the windows that fit itself.)
    #[cfg(infer_core_mve)]
    return match super::dsp::windows_3x3_fitting(&rows, step, (first, count)) {
        0 => 0,
        count => put_3x3_words(rows, step, zero_point, (first, count), patch),
    };
    #[cfg(not(infer_core_mve))]
    put_3x3_run_i8_portable(rows, step, zero_point, (first, count), patch)
}

/// [`put_3x3_run_i8`]'s assembly, for `count` (1 to `4 - first`) windows whose rows hold
/// `(count - 1) · step + 4` bytes each (`dsp::windows_3x3_fitting`).
#[cfg(infer_core_mve)]
#[inline(always)]
fn put_3x3_words(
    rows: [&[i8]; 3],
    step: usize,
    zero_point: i8,
    (first, count): (usize, usize),
    patch: &mut [i8; QUAD_I8_BYTES],
) -> u32 {
    let any: u32;
    // SAFETY: the loop runs `count` ≥ 1 times (checked by the caller). Window `k` reads the
    // word at byte `k · step` of each row, within it (each holds `(count - 1) · step + 4`
    // bytes, checked; Armv8-M loads unaligned words), and writes bytes `16p..16p + 9` of
    // `patch` for `p = first + k < 4` (`count ≤ 4 - first`, checked), within its 64: row 0's
    // word at `16p`, row 1's at `16p + 3` over row 0's fourth byte, row 2's low halfword
    // at `16p + 6` over row 1's fourth byte and its third byte at `16p + 8` (unaligned
    // stores, which Armv8-M makes to memory). Registers written are declared; no stack.
    unsafe {
        asm!(
            "2:",
            "ldr {a}, [{r0}]",
            "ldr {b}, [{r1}]",
            "ldr {c}, [{r2}]",
            "add {r0}, {step}",
            "add {r1}, {step}",
            "add {r2}, {step}",
            "str {a}, [{p}]",
            "str {b}, [{p}, #3]",
            "strh {c}, [{p}, #6]",
            // Each row's three values XOR-ed with the zero point (shifted past the fourth).
            "eors {a}, {zp}",
            "eors {b}, {zp}",
            "orr {any}, {any}, {a}, lsl #8",
            "orr {any}, {any}, {b}, lsl #8",
            "lsrs {a}, {c}, #16",
            "strb {a}, [{p}, #8]",
            "eors {c}, {zp}",
            "orr {any}, {any}, {c}, lsl #8",
            "adds {p}, #16",
            "subs {n}, #1",
            "bne 2b",
            r0 = inout(reg) rows[0].as_ptr() => _,
            r1 = inout(reg) rows[1].as_ptr() => _,
            r2 = inout(reg) rows[2].as_ptr() => _,
            step = in(reg) step,
            zp = in(reg) u32::from(zero_point as u8) * 0x0101_0101,
            p = inout(reg) patch.as_mut_ptr().wrapping_add(16 * first) => _,
            n = inout(reg) count => _,
            any = inout(reg) 0u32 => any,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            options(nostack),
        );
    }
    // The three bytes' ORs folded into one, as the portable twin's.
    let any = any >> 8;
    (any | any >> 8 | any >> 16) & 0xff
}

/// [`put_3x3_run_i8`] byte by byte (the reference the assembly is tested against, and the
/// code elsewhere).
#[inline(always)]
pub fn put_3x3_run_i8_portable(
    rows: [&[i8]; 3],
    step: usize,
    zero_point: i8,
    (first, count): (usize, usize),
    patch: &mut [i8; QUAD_I8_BYTES],
) -> u32 {
    let mut any = 0;
    for k in 0..super::dsp::windows_3x3_fitting(&rows, step, (first, count)) {
        let at = k.saturating_mul(step);
        for (ky, row) in rows.iter().enumerate() {
            let values = row.get(at..).and_then(|r| r.first_chunk::<3>());
            let out = patch.get_mut(16 * (first + k) + 3 * ky..);
            if let (Some(values), Some(out)) = (values, out.and_then(|o| o.first_chunk_mut())) {
                *out = *values;
                any |= values
                    .iter()
                    .fold(0, |a, &v| a | u32::from((v ^ zero_point) as u8));
            }
        }
    }
    any
}

/// Four pixels' convolutions from an int8 quad patch ([`QuadConvI8`]): for filter `f` and
/// pixel `p`, the sum `Σ (x_p + offset) · w_f` (as `i32`, computed as `Σ x_p · w_f` plus the
/// filter's offset term, the same sum modulo 2³²) stored at `values[p · stride + f]`, or,
/// with stride 0 (a pool window), folded into the running max `values[f]` (the assembly
/// adds an odd last filter's offset term to the max of its four sums, the same while the
/// sums fit an `i32`, as every valid model's do). Computes nothing if a size does not fit.
///
/// On an MVE core two blocks of assembly: the filters two at a time, their eight sums (one
/// per filter and pixel, in registers) starting from the offset terms; 32 taps of the four
/// pixels (256 multiply-accumulates) in 30 instructions (per sixteen taps both filters'
/// weights, per pixel one load of its taps and two `VMLADAVA.S8`s; the loop end), the taps
/// left sixteen at a time with the weights' lanes past `taps` predicated off (so zero);
/// then the stores, or each filter's running max with its four sums in four instructions
/// (two `VMOV`s into a vector, one `VMAXV`, the load and store shared by the pair); an odd
/// last filter alone, in nine instructions per 64 (its loop tail-predicated); elsewhere
/// [`quad_filters_i8_portable`].
#[cfg_attr(infer_core_mve, inline(never))]
#[cfg_attr(not(infer_core_mve), inline(always))]
pub fn quad_filters_i8(conv: &QuadConvI8<'_>, values: &mut [u32]) {
    if !conv.fits(values) {
        return;
    }
    #[cfg(infer_core_mve)]
    {
        let taps = conv.taps;
        let pairs = conv.filters / 2;
        if pairs > 0 {
            // Registers: filter 2i's four sums r0 r4 r8 r12, filter 2i + 1's r2 r6 r10 lr
            // (`VMLADAVA` takes even ones), starting from their offset terms; the rows'
            // pointers r1 r3, the patch pointer r9, the count r5, the patch r11, the offset
            // terms' pointer r7. On the stack (pushed from r0, r2, r4, r5, r8–r10): where
            // the offset terms end [sp], taps [sp, #4], the values [sp, #8], the stride in
            // bytes [sp, #12], pairs of whole blocks of sixteen taps [sp, #16], the taps
            // after them [sp, #20], the bytes the rows' pointers overshoot a row by (the
            // last block's loads step 16) [sp, #24].
            // SAFETY: per pair, r9 reads 4 · taps.div_ceil(16) · 16 bytes of `patch` from its
            // start (checked above, byte loads); r1 and r3 read rows 2i and 2i + 1, `taps`
            // bytes each (2 · pairs · taps ≤ filters · taps checked above; the last partial
            // block's loads predicated to the lanes left, which `VCTP` sets, the others
            // zeroed and not read); r7 reads two words of `offset_terms` per pair (filters
            // checked above; word-aligned); `values` read and written at p · stride + 2i and
            // p · stride + 2i + 1 for p < 4 (checked above; word-aligned, as LDRD/STRD need).
            // r6 and r7 (which cannot be named) are saved on the stack and restored; the
            // block pops everything it pushes, reads and writes nothing else, and every
            // register written is declared.
            unsafe {
                asm!(
                    "push {{r6, r7}}",
                    "push {{r0, r2, r4, r5, r8, r9, r10}}",
                    "mov r7, r3",
                    "add r3, r1, r2",
                    "3:",
                    // The pair's sums start from its offset terms.
                    "ldrd r0, r2, [r7], #8",
                    "mov r4, r0",
                    "mov r8, r0",
                    "mov r12, r0",
                    "mov r6, r2",
                    "mov r10, r2",
                    "mov lr, r2",
                    "mov r9, r11",
                    // Pairs of whole blocks of sixteen taps, if any.
                    "ldr r5, [sp, #16]",
                    "cbz r5, 5f",
                    "2:",
                    "vldrb.s8 q0, [r1], #16",
                    "vldrb.s8 q1, [r3], #16",
                    quad_block!(),
                    "vldrb.s8 q0, [r1], #16",
                    "vldrb.s8 q1, [r3], #16",
                    quad_block!(),
                    "subs r5, #1",
                    "bne 2b",
                    "5:",
                    // The taps after them (under 32), sixteen at a time, the weights' lanes
                    // past the taps zero.
                    "ldr r5, [sp, #20]",
                    "cbz r5, 4f",
                    "6:",
                    "vctp.8 r5",
                    "vpstt",
                    "vldrbt.s8 q0, [r1], #16",
                    "vldrbt.s8 q1, [r3], #16",
                    quad_block!(),
                    "subs r5, #16",
                    "bgt 6b",
                    "4:",
                    // The next pair's rows (both pointers overshot theirs by as much), the
                    // values' pointer r9, the stride r5.
                    "ldr r5, [sp, #24]",
                    "subs r1, r3, r5",
                    "ldr r5, [sp, #4]",
                    "add r3, r1, r5",
                    "ldr r9, [sp, #8]",
                    "ldr r5, [sp, #12]",
                    "cbz r5, 9f",
                    // A stride (four pixels of their own): the sums stored, pixel by pixel.
                    "strd r0, r2, [r9], #8",
                    "add r0, r9, r5",
                    "strd r4, r6, [r0, #-8]",
                    "add r0, r5",
                    "strd r8, r10, [r0, #-8]",
                    "add r0, r5",
                    "strd r12, lr, [r0, #-8]",
                    "b 10f",
                    // Stride 0 (a pool window): each filter's running max with its four
                    // sums (`VMAXV` takes the max of a vector's lanes and a register).
                    "9:",
                    "vmov q0[2], q0[0], r0, r4",
                    "vmov q0[3], q0[1], r8, r12",
                    "vmov q1[2], q1[0], r2, r6",
                    "vmov q1[3], q1[1], r10, lr",
                    "ldrd r0, r2, [r9]",
                    "vmaxv.s32 r0, q0",
                    "vmaxv.s32 r2, q1",
                    "strd r0, r2, [r9], #8",
                    "10:",
                    "str r9, [sp, #8]",
                    "ldr r5, [sp]",
                    "cmp r7, r5",
                    "bne 3b",
                    "add sp, #28",
                    "pop {{r6, r7}}",
                    inout("r0") conv.offset_terms.as_ptr().wrapping_add(2 * pairs) => _,
                    inout("r1") conv.weights.as_ptr() => _,
                    inout("r2") taps => _,
                    inout("r3") conv.offset_terms.as_ptr() => _,
                    inout("r4") values.as_mut_ptr() => _,
                    inout("r5") 4 * conv.stride => _,
                    inout("r8") taps / 32 => _,
                    inout("r9") taps % 32 => _,
                    inout("r10") taps.div_ceil(16) * 16 - taps => _,
                    inout("r11") conv.patch.as_ptr() => _,
                    out("r12") _,
                    out("lr") _,
                    out("q0") _,
                    out("q1") _,
                    out("q2") _,
                    out("q3") _,
                );
            }
        }
        if conv.filters % 2 == 0 {
            return;
        }
        // The odd last filter.
        let last = conv.filters - 1;
        let Some(values) = values.get_mut(last..) else {
            return;
        };
        let (weights, terms) = (
            conv.weights.get(last * taps..).unwrap_or_default(),
            conv.offset_terms.get(last..).unwrap_or_default(),
        );
        let conv = QuadConvI8 {
            weights,
            offset_terms: terms,
            filters: 1,
            ..*conv
        };
        if !conv.fits(values) {
            return;
        }
        // Registers: the four sums r0 r2 r4 r8, the offset terms' pointer r10. On the
        // stack: filters left [sp], the bytes the weight pointer overshoots a row by (the
        // last block's loads step 16) [sp, #4].
        // SAFETY: per filter, r3 reads 4 · taps.div_ceil(16) · 16 bytes of `patch` from its
        // start (the last block's lanes past `taps` predicated off; checked above, byte
        // loads); r1 reads the filter's `taps` bytes of `weights` (filters · taps checked
        // above; predicated past `taps`) and is moved back to the next row; r10 reads one
        // word of `offset_terms` per filter (filters checked above; word-aligned); lr reads
        // and writes `values` at p · stride + f for p < 4, f < filters (checked above). The
        // loop count `taps` is ≥ 1. The block pops the two words it pushes; nothing else
        // is read or written, and every register written is declared (explicit registers:
        // `VMLADAVA` takes even ones).
        unsafe {
            asm!(
                "push {{r0, r2}}",
                "3:",
                "movs r0, #0",
                "movs r2, #0",
                "movs r4, #0",
                "mov.w r8, #0",
                "mov r3, r11",
                "dlstp.8 lr, r5",
                "2:",
                "vldrb.s8 q0, [r1], #16",
                "vldrb.s8 q1, [r3], #16",
                "vmladava.s8 r0, q1, q0",
                "vldrb.s8 q2, [r3], #16",
                "vmladava.s8 r2, q2, q0",
                "vldrb.s8 q1, [r3], #16",
                "vmladava.s8 r4, q1, q0",
                "vldrb.s8 q2, [r3], #16",
                "vmladava.s8 r8, q2, q0",
                "letp lr, 2b",
                "ldr r3, [sp, #4]",
                "subs r1, r1, r3",
                "ldr r3, [r10], #4",
                "mov lr, r12",
                "cmp r9, #0",
                "bne 9f",
                // Stride 0 (a pool window): the four sums' max, its offset term, then one
                // running max.
                "cmp r0, r2",
                "it lt",
                "movlt r0, r2",
                "cmp r0, r4",
                "it lt",
                "movlt r0, r4",
                "cmp r0, r8",
                "it lt",
                "movlt r0, r8",
                "add r0, r3",
                pixel_max!("r0"),
                "b 10f",
                // A stride (four pixels of their own): the sums and their offset term stored.
                "9:",
                "add r0, r3",
                "add r2, r3",
                "add r4, r3",
                "add r8, r3",
                "str r0, [lr]",
                "str r2, [lr, r9]",
                "add.w lr, lr, r9, lsl #1",
                "str r4, [lr]",
                "str r8, [lr, r9]",
                "10:",
                "adds r12, #4",
                "ldr r3, [sp]",
                "subs r3, #1",
                "str r3, [sp]",
                "bne 3b",
                "add sp, #8",
                inout("r0") conv.filters => _,
                inout("r2") taps.div_ceil(16) * 16 - taps => _,
                inout("r10") conv.offset_terms.as_ptr() => _,
                inout("r1") conv.weights.as_ptr() => _,
                inout("r5") taps => _,
                inout("r9") 4 * conv.stride => _,
                inout("r11") conv.patch.as_ptr() => _,
                inout("r12") values.as_mut_ptr() => _,
                out("r3") _,
                out("r4") _,
                out("r8") _,
                out("lr") _,
                out("q0") _,
                out("q1") _,
                out("q2") _,
            );
        }
    }
    #[cfg(not(infer_core_mve))]
    quad_filters_i8_portable(conv, values);
}

/// [`quad_filters_i8`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn quad_filters_i8_portable(conv: &QuadConvI8<'_>, values: &mut [u32]) {
    if !conv.fits(values) {
        return;
    }
    let QuadConvI8 {
        patch,
        weights,
        taps,
        filters,
        offset_terms,
        stride,
    } = *conv;
    let rows = weights.chunks_exact(taps).zip(offset_terms).take(filters);
    for (f, (w, &term)) in rows.enumerate() {
        for p in 0..4 {
            let acc = w.iter().enumerate().fold(term as i32, |acc, (t, &w)| {
                let x = patch.get(64 * (t / 16) + 16 * p + t % 16).map_or(0, |&x| x);
                acc.wrapping_add(i32::from(x).wrapping_mul(i32::from(w as i8)))
            });
            put_sum(values, p * stride + f, stride, acc);
        }
    }
}

/// [`super::dsp::pack_groups`] on an MVE core: eight values in five instructions (one
/// widening load, one add, one scatter store into the packed order, the pointer step, the
/// loop end), for sizes that fit (`pack_fits`).
#[cfg(infer_core_mve)]
#[inline(never)]
pub(crate) fn pack_groups_mve(
    run: &[i8],
    offset: i32,
    patch: &mut [u32],
    step: usize,
    groups: usize,
) {
    // Halfword offsets of two groups: the packed order, the second group 2 · step halfwords on.
    let s = (2 * step) as u16;
    let scatter: [u16; 8] = [0, 2, 1, 3, s, s + 2, s + 1, s + 3];
    // SAFETY: the loop runs over `4 · groups` halfwords (tail-predicated: lanes past the
    // count neither load nor store). r1 reads the first `4 · groups` bytes of `run` (checked
    // by the caller, `dsp::pack_fits`; byte loads; a low register, as the widening load needs);
    // `pp` scatters into words `k · step` and `k · step + 1` of `patch` for k < groups,
    // within it (checked by the caller; halfword stores into a word-aligned buffer, which
    // nothing else borrows); `offsets` reads the 16 bytes of `scatter`. The stack is not
    // otherwise touched, and every register written (the pointers, lr, q0 and q3) is
    // declared.
    unsafe {
        asm!(
            "vldrh.u16 q3, [{offsets}]",
            "wlstp.16 lr, {n}, 3f",
            "2:",
            "vldrb.s16 q0, [r1], #8",
            "vadd.i16 q0, q0, {offset}",
            "vstrh.16 q0, [{pp}, q3, uxtw #1]",
            "add {pp}, {advance}",
            "letp lr, 2b",
            "3:",
            offsets = in(reg) scatter.as_ptr(),
            n = in(reg) 4 * groups,
            offset = in(reg) offset,
            advance = in(reg) 8 * step,
            pp = inout(reg) patch.as_mut_ptr() => _,
            inout("r1") run.as_ptr() => _,
            out("lr") _,
            out("q0") _,
            out("q3") _,
            options(nostack),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dot::{pack_patch, PatchWords};
    use crate::kernels::TestRng;
    use std::vec::Vec;

    /// A depthwise block fits exactly when its last pixel's last tap of its last channel
    /// lies inside the input and its last output inside the output.
    #[test]
    fn dw_groups_fit_exactly_when_every_byte_is_inside() {
        let mut rng = TestRng(0xD6F1);
        for _ in 0..200 {
            let group = DwGroup {
                row: rng.below(40) as usize,
                col: rng.below(12) as usize,
                in_step: rng.below(16) as usize,
                in_row: rng.below(100) as usize,
                out_step: rng.below(16) as usize,
                out_row: rng.below(100) as usize,
                cols: 1 + rng.below(9) as usize,
                rows: 1 + rng.below(4) as usize,
                ..DwGroup::default()
            };
            let (origin, out_at) = (rng.below(20) as usize, rng.below(20) as usize);
            let (i, j) = (group.rows - 1, group.cols - 1);
            let read = origin + i * group.in_row + j * group.in_step + 2 * group.row;
            let read = read + 2 * group.col + 3;
            let written = out_at + i * group.out_row + j * group.out_step + 3;
            assert!(group.fits(read + 1, origin, written + 1, out_at));
            assert!(!group.fits(read, origin, written + 1, out_at));
            assert!(!group.fits(read + 1, origin, written, out_at));
        }
        let empty = DwGroup::default();
        assert!(!empty.fits(1 << 20, 0, 1 << 20, 0), "no pixels");
    }

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

    /// A streamed dense layer's step from int8 values against the sums of products written
    /// out, on random units (an odd last one left alone), channels (1 up to four blocks and
    /// a partial one), strides and offsets (0, whose units may go four at a time, the
    /// extremes, any); a slice too short adds nothing.
    #[test]
    fn dense_rows_add_each_units_sum_of_products() {
        let mut rng = TestRng(0xDE45);
        for case in 0..300 {
            let channels = 1 + rng.below(70) as usize;
            let units = 2 + rng.below(11) as usize;
            let stride = channels + rng.below(5) as usize;
            let offset = [0, -127, 128, rng.below(256) as i32 - 127][case % 4];
            let values: Vec<i8> = (0..channels).map(|_| rng.next_u64() as i8).collect();
            let weights: Vec<u8> = (0..(units - 1) * stride + channels)
                .map(|_| rng.next_u64() as u8)
                .collect();
            let start: Vec<u32> = (0..units).map(|_| rng.next_u64() as u32).collect();
            let want: Vec<u32> = (0..units)
                .map(|u| {
                    if u == units / 2 * 2 {
                        return start[u];
                    }
                    let row = &weights[u * stride..][..channels];
                    let sum = values.iter().zip(row).fold(0i32, |a, (&x, &w)| {
                        a.wrapping_add((i32::from(x) + offset) * i32::from(w as i8))
                    });
                    start[u].wrapping_add(sum as u32)
                })
                .collect();
            let rows = DenseRowsI8 {
                values: &values,
                weights: &weights,
                channels,
                stride,
                offset,
            };
            let mut acc = start.clone();
            dense_rows_i8(&rows, &mut acc);
            assert_eq!(acc, want, "case {case}");
            let short = DenseRowsI8 {
                weights: &weights[..weights.len() - 1],
                ..rows
            };
            let mut acc = start.clone();
            dense_rows_i8(&short, &mut acc);
            let whole = units / 2 * 2 == units;
            assert_eq!(acc == start, whole, "case {case}");
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
