//! Runs a format-3 model whose shapes are known only at run time: for host tools (the
//! trainer's evaluation), tests, and as the reference the typed networks are checked against.

use super::facts::Unknown;
use super::format::{input_offset, Op, StackFile};
use super::stages::{
    assign_buffers, plan_file, regions, regions_mut, run_add, run_alone, run_alone_in_place,
    run_chain, run_general, run_general_logits, run_general_rows, run_pointwise_in_place,
    shapes_of, stage_buffers, BufferPlan, OpShape, Out, Parts, Pixels, Unit,
};
use crate::kernels::conv::conv2d_i8;
use crate::kernels::dense::{dense_i8, dense_i8_logits};
use crate::kernels::pool::{max_pool, PoolGeometry};
use crate::kernels::ChannelRequant;
use crate::kernels::MapRows;
use crate::Error;
use core::ops::Range;

/// Which kernels [`run`] uses; both give the same bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// The naive reference kernels.
    Reference,
    /// The fast paths: the stages of [`super::stages::plan`], fused as the typed layers
    /// and the firmware run them.
    Fast,
}

/// Working memory of an inference of a model, besides the input and the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferSizes {
    /// Bytes of the arena the tensors are kept in ([`super::stages::assign_buffers`]:
    /// every tensor but the input and the logits, those live at once never overlapping;
    /// with [`BufferSizes::of`], the larger of the stages' and the operations one by one).
    pub arena: usize,
    /// Words of the patch buffer (the stages' packed patches and working memory; with
    /// [`BufferSizes::of`], as [`run`] computes every stage with
    /// [`super::stages::run_general`]).
    pub patch_words: usize,
    /// Bytes of kernel scratch on the stack (the one-channel 3×3 fast path's, in the typed
    /// layers; [`run`] needs none).
    pub stack_bytes: usize,
}

impl BufferSizes {
    /// Sizes for [`run`] on `file` with either kernel set, computing `pixels` conv pixels
    /// at once: the larger of [`BufferSizes::engine`] and the op-by-op reference's buffers.
    pub fn of(file: &StackFile<'_>, pixels: Pixels) -> Self {
        let mut sizes = Self::engine(file, pixels);
        let shapes = shapes_of(file);
        for stage in &plan_file(file) {
            sizes.patch_words = sizes.patch_words.max(stage.general_words(&shapes, pixels));
        }
        for shape in &shapes {
            sizes.patch_words = sizes.patch_words.max(shape.alone_words());
        }
        if let Some(plan) = op_buffers(&shapes) {
            sizes.arena = sizes.arena.max(plan.arena);
        }
        sizes
    }

    /// What the engine needs computing `pixels` conv pixels at once: the buffers of the
    /// stage plan ([`super::stages::plan`]) as the typed layers and the firmware lay them
    /// out, the last stage writing the caller's logits.
    pub fn engine(file: &StackFile<'_>, pixels: Pixels) -> Self {
        let mut sizes = Self {
            arena: 0,
            patch_words: 0,
            stack_bytes: 0,
        };
        let shapes = shapes_of(file);
        let stages = plan_file(file);
        for stage in &stages {
            sizes.patch_words = sizes.patch_words.max(stage.patch_words(&shapes, pixels));
            sizes.stack_bytes = sizes.stack_bytes.max(stage.stack_bytes(&shapes));
        }
        if let Some(plan) = stage_buffers(&stages, &shapes) {
            sizes.arena = plan.arena;
        }
        sizes
    }
}

/// The buffers of the op-by-op reference: every operation a unit of its own.
fn op_buffers(shapes: &[OpShape]) -> Option<BufferPlan> {
    assign_buffers(
        shapes
            .iter()
            .enumerate()
            .map(|(i, shape)| Unit::of_op(i, shape)),
    )
}

/// The regions of `arena` a unit of `plan` writes (its output tensor `out`, `out_len`
/// values; [`usize::MAX`]: the logits, nothing) and reads (`reads`: tensors and lengths,
/// the model's `input` for tensor 0). A region too small or overlapping is an error.
fn unit_regions<'b, const N: usize>(
    plan: &BufferPlan,
    arena: &'b mut [i8],
    input: &'b [i8],
    (out, out_len): (usize, usize),
    reads: [(usize, usize); N],
) -> Result<(&'b mut [i8], [&'b [i8]; N]), Error> {
    let available = arena.len();
    let write = plan.region(out, out_len);
    let writes = write.is_some();
    let (dst, got) = regions(
        arena,
        write.unwrap_or(0..0),
        reads.map(|(t, len)| plan.region(t, len)),
    );
    if writes && dst.len() < out_len {
        return Err(Error::BufferTooSmall { available });
    }
    let mut values = [&[][..]; N];
    for ((v, got), (t, len)) in values.iter_mut().zip(got).zip(reads) {
        let src = if plan.region(t, len).is_none() {
            input
        } else {
            got
        };
        *v = src.get(..len).ok_or(Error::BufferTooSmall {
            available: src.len(),
        })?;
    }
    Ok((dst, values))
}

/// Runs every operation of `file` on `input` (the int8 image), keeping the tensors in
/// `arena` where [`super::stages::assign_buffers`] places them; the last operation writes
/// the wide logits into `logits`, which are returned (its first [`StackFile::classes`]
/// values). With [`Kernels::Fast`], four conv pixels go at once where `patch` holds
/// [`BufferSizes::of`] [`Pixels::Four`]'s words, else one ([`Pixels`]).
///
/// # Errors
/// [`Error::BufferTooSmall`] if `input`, `arena`, `patch` or `logits` is smaller than
/// [`BufferSizes::of`] (with [`Pixels::One`]) and the classes say (the input must be
/// exactly the model's input size).
pub fn run<'l>(
    file: &StackFile<'_>,
    input: &[i8],
    kernels: Kernels,
    arena: &mut [i8],
    patch: &mut [u32],
    logits: &'l mut [i32],
) -> Result<&'l [i32], Error> {
    let sizes = BufferSizes::of(file, Pixels::One);
    let image = usize::from(file.input.height)
        * usize::from(file.input.width)
        * usize::from(file.input.channels);
    if input.len() != image {
        return Err(Error::BufferTooSmall {
            available: input.len(),
        });
    }
    if arena.len() < sizes.arena {
        return Err(Error::BufferTooSmall {
            available: arena.len(),
        });
    }
    if patch.len() < sizes.patch_words {
        return Err(Error::BufferTooSmall {
            available: patch.len() * 4,
        });
    }
    let classes = file.classes();
    let available = logits.len();
    let logits = logits
        .get_mut(..classes)
        .ok_or(Error::BufferTooSmall { available })?;
    let shapes = shapes_of(file);
    if kernels == Kernels::Fast {
        let pixels = if patch.len() >= BufferSizes::of(file, Pixels::Four).patch_words {
            Pixels::Four
        } else {
            Pixels::One
        };
        run_stages(file, input, arena, (patch, pixels), logits)?;
        return Ok(logits);
    }
    let plan = op_buffers(&shapes).ok_or(Error::Malformed { what: "buffers" })?;
    let last = file.ops.len().saturating_sub(1);
    for (i, op) in file.ops.iter().enumerate() {
        if let Op::Branch(_) = op {
            continue;
        }
        let offset = input_offset(file, i);
        let other = match op {
            Op::Add(a) => usize::from(a.other),
            _ => i,
        };
        let out = if i == last { usize::MAX } else { i + 1 };
        let reads = [(i, op.in_len()), (other, op.in_len())];
        let (dst, [src, other]) = unit_regions(&plan, arena, input, (out, op.out_len()), reads)?;
        if i == last {
            // The logits layer (a dense layer: the decoder checked), finished wide.
            let Op::Dense(d) = op else {
                return Err(Error::Malformed { what: "logits" });
            };
            let requant = ChannelRequant::from_params(&d.params, false);
            dense_i8_logits(src, offset, d.params.weights, &requant, logits);
            break;
        }
        let available = dst.len();
        let dst = dst
            .get_mut(..op.out_len())
            .ok_or(Error::BufferTooSmall { available })?;
        // The reference kernels, operation by operation ([`Kernels::Fast`] ran the stages).
        match op {
            Op::Conv2d(c) | Op::Conv2dRect(c, _) => {
                if let Some((_, g)) = op.conv() {
                    conv2d_i8(
                        &g,
                        src,
                        offset,
                        c.params.weights,
                        &ChannelRequant::from_params(&c.params, c.relu),
                        dst,
                    );
                }
            }
            Op::DepthwiseConv2d(_) | Op::AvgPool2d(_) => run_alone(file, i, true, src, patch, dst),
            Op::Add(_) => run_add(file, i, true, (src, other), patch, dst),
            Op::MaxPool2d(p) => max_pool(
                &PoolGeometry {
                    in_h: p.in_h.into(),
                    in_w: p.in_w.into(),
                    channels: p.channels.into(),
                    size: p.pool.into(),
                },
                src,
                dst,
            ),
            Op::Dense(d) => dense_i8(
                src,
                offset,
                d.params.weights,
                &ChannelRequant::from_params(&d.params, d.relu),
                dst,
            ),
            Op::Branch(_) => {}
        }
    }
    Ok(logits)
}

/// [`run`] with [`Kernels::Fast`]: stage by stage, each writing the buffer of
/// [`stage_buffers`]; the last stage writes the wide logits.
fn run_stages(
    file: &StackFile<'_>,
    input: &[i8],
    arena: &mut [i8],
    (patch, pixels): (&mut [u32], Pixels),
    logits: &mut [i32],
) -> Result<(), Error> {
    let stages = plan_file(file);
    let last_stage = stages.len().saturating_sub(1);
    let shapes = shapes_of(file);
    let plan = stage_buffers(&stages, &shapes).ok_or(Error::Malformed { what: "buffers" })?;
    for (j, stage) in stages.iter().enumerate() {
        if stage.ring_out > 0 {
            // The next stage runs it, through a ring.
            continue;
        }
        let (Some(first), Some(last)) = (file.ops.get(stage.first), file.ops.get(stage.last()))
        else {
            return Err(Error::Malformed { what: "stage" });
        };
        if let Op::Branch(_) = first {
            continue;
        }
        let out = if j == last_stage {
            usize::MAX
        } else {
            stage.last() + 1
        };
        if stage.ring_in > 0 {
            // The plan chains the second stage to the first only: the first reads the input
            // and writes its rows into its region, a ring; this one writes its own or the
            // logits.
            let producer_stage = stages.first().ok_or(Error::Malformed { what: "stage" })?;
            let producer =
                Parts::of(file, producer_stage).ok_or(Error::Malformed { what: "stage" })?;
            let parts = Parts::of(file, stage).ok_or(Error::Malformed { what: "stage" })?;
            let words = producer_stage
                .general_words(&shapes, pixels)
                .min(patch.len());
            let (producer_words, words) = patch.split_at_mut(words);
            let mut make = |rows: Range<usize>, ring: &mut [i8]| {
                let ring = MapRows::ring(ring, stage.ring_in);
                run_general_rows::<Unknown>(&producer, input, producer_words, ring, rows);
            };
            let ring_len = producer_stage.out_len(&shapes);
            let ring_at = plan.region(stage.first, ring_len).unwrap_or(0..0);
            let out_at = plan.region(out, last.out_len()).unwrap_or(0..0);
            let (ring, out) = regions_mut(arena, ring_at, out_at);
            if ring.len() < ring_len {
                return Err(Error::BufferTooSmall {
                    available: ring.len(),
                });
            }
            let out = if j == last_stage {
                Out::Logits(logits)
            } else {
                Out::Values(MapRows::whole_mut(out))
            };
            run_chain::<Unknown>(&mut make, &parts, ring, stage.ring_in, words, out);
            if j == last_stage {
                break;
            }
            continue;
        }
        if stage.over_input && j != last_stage {
            // Its input's storage gets its output.
            let len = first.in_len().max(last.out_len());
            let available = arena.len();
            let map = plan
                .region(stage.first, len)
                .and_then(|r| arena.get_mut(r))
                .ok_or(Error::BufferTooSmall { available })?;
            if stage.alone {
                run_alone_in_place(file, stage.first, map, patch);
            } else {
                let parts = Parts::of(file, stage).ok_or(Error::Malformed { what: "stage" })?;
                run_pointwise_in_place::<Unknown>(&parts, map, patch);
            }
            continue;
        }
        // An add alone reads its other operand; one in place finds it in its output.
        let other = match shapes.get(stage.first) {
            Some(OpShape::Add { other, .. }) => *other,
            _ => stage.first,
        };
        let reads = [(stage.first, first.in_len()), (other, first.in_len())];
        let (dst, [src, other]) = unit_regions(&plan, arena, input, (out, last.out_len()), reads)?;
        if stage.alone {
            let available = dst.len();
            let dst = dst
                .get_mut(..last.out_len())
                .ok_or(Error::BufferTooSmall { available })?;
            if let Op::Add(_) = first {
                run_add(file, stage.first, false, (src, other), patch, dst);
            } else {
                run_alone(file, stage.first, false, src, patch, dst);
            }
            continue;
        }
        let parts = Parts::of(file, stage).ok_or(Error::Malformed { what: "stage" })?;
        if j == last_stage {
            // Its last operation is the logits layer (the decoder checked).
            run_general_logits::<Unknown>(&parts, src, patch, logits);
            break;
        }
        // With an add in place, `dst` holds its other operand.
        let available = dst.len();
        let dst = dst
            .get_mut(..last.out_len())
            .ok_or(Error::BufferTooSmall { available })?;
        run_general::<Unknown>(&parts, src, patch, dst);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::{vec, vec::Vec};

    /// The logits of `file` on `x` with the reference kernels, then the fast ones, each in
    /// fresh buffers of `sizes` (nothing of the reference's run may show through).
    pub(crate) fn reference_and_fast(
        file: &StackFile<'_>,
        x: &[i8],
        sizes: &BufferSizes,
    ) -> [Vec<i32>; 2] {
        [Kernels::Reference, Kernels::Fast].map(|kernels| {
            let mut arena = vec![0i8; sizes.arena];
            let mut patch = vec![0u32; sizes.patch_words];
            let mut logits = vec![0i32; file.classes()];
            let out = run(file, x, kernels, &mut arena, &mut patch, &mut logits);
            out.unwrap().to_vec()
        })
    }
}
