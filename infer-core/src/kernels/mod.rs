//! Slice-based kernels: one non-generic function per operation, so every shape shares
//! the same code in flash. The typed layers of [`crate::stack::layers`] check the shapes at
//! compile time and call these with exactly sized slices.
//!
//! The exceptions are the fused one-channel 3×3 stage of [`fused`] (generic over the
//! number of filters and units so that its loops have constant bounds; a firmware has one
//! network) and the target-specific instructions of [`dsp`], [`mve`] and [`pairs`], the
//! crate's only `unsafe` code. The unfused kernels stay the reference the fused ones are
//! tested against.
//!
//! Contract shared by all kernels: tensors are NHWC without the batch dimension, row-major.
//! Kernels never panic: if a slice is shorter than its geometry implies, the computation
//! stops early and leaves the rest of the output untouched (the typed front end makes that
//! impossible).

pub mod activation;
pub mod add;
pub mod average_pool;
pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod dot;
pub mod dsp;
pub mod float;
pub mod fused;
pub mod mve;
pub mod pairs;
pub mod pool;
pub mod softmax;
pub mod window;
pub mod words;

use core::num::NonZeroUsize;

/// Per-output-channel requantization parameters, read in place from model bytes.
#[derive(Debug, Clone, Copy)]
pub struct ChannelRequant<'a> {
    /// i32 little-endian biases, one per output channel.
    pub bias: &'a [u8],
    /// i32 little-endian Q31 multipliers, one per output channel.
    pub multiplier: &'a [u8],
    /// Shifts, one i8 per output channel.
    pub shift: &'a [u8],
    /// Added to each requantized value (the output zero point).
    pub output_offset: i32,
    /// Lowest output value (−128, or the zero point for a fused ReLU).
    pub activation_min: i32,
    /// Highest output value.
    pub activation_max: i32,
}

impl<'a> ChannelRequant<'a> {
    /// The requantization of a conv/dense layer's parameters, clamped below at the output
    /// zero point (real 0) when the layer has a fused ReLU.
    pub fn from_params(p: &crate::format::ChannelParams<'a>, relu: bool) -> Self {
        let zp = p.output.zero_point;
        Self {
            bias: p.bias,
            multiplier: p.multiplier,
            shift: p.shift,
            output_offset: zp,
            activation_min: if relu { zp.clamp(-128, 127) } else { -128 },
            activation_max: 127,
        }
    }

    /// The requantization of a layer's parameters clamped to `min..=max` (a fused
    /// activation's bounds, as TFLite computes them from the output quantization).
    pub fn from_params_clamped(p: &crate::format::ChannelParams<'a>, min: i8, max: i8) -> Self {
        Self {
            bias: p.bias,
            multiplier: p.multiplier,
            shift: p.shift,
            output_offset: p.output.zero_point,
            activation_min: i32::from(min),
            activation_max: i32::from(max),
        }
    }

    /// `(bias, multiplier, shift)` of output channel `channel`, or `None` past the end.
    #[inline(always)]
    pub fn channel(&self, channel: usize) -> Option<(i32, i32, i32)> {
        let at = channel * 4;
        let bias = self.bias.get(at..at + 4)?.first_chunk()?;
        let mult = self.multiplier.get(at..at + 4)?.first_chunk()?;
        let shift = *self.shift.get(channel)? as i8;
        Some((
            dsp::word(bias) as i32,
            dsp::word(mult) as i32,
            i32::from(shift),
        ))
    }

    /// Requantizes whole positions of accumulators without their bias (`values`: one `i32`
    /// per channel, as `u32` bits, `channels` per position) to int8 values: into `out`, value
    /// `i` at `out[i]`, or with `out` `None` narrowed in place, value `i` into byte `i` of
    /// `values`' memory ([`dsp::int8_of_words`]; the bytes past the values unspecified).
    /// Each is the sum with its bias through [`Self::apply`]; channels past the parameters
    /// give −128. For a monotonic requantization only (every shift ≤ 0, which a stage that
    /// requantizes its windows' maxima has; callers check): on MVE cores every one takes
    /// [`mve::requantize_right`], elsewhere one with its floor at or above the zero point (a
    /// ReLU) the shorter way of [`dsp::requantize_relu`], any other
    /// [`dsp::requantize_int8`], to the same values; with a left shift those ways' values are
    /// unspecified. `relu` is [`Self::relu_floor`], which a
    /// caller may know at compile time.
    #[inline(always)]
    pub(crate) fn requantize_positions(
        &self,
        values: &mut [u32],
        channels: usize,
        relu: bool,
        out: Option<&mut [i8]>,
    ) {
        if cfg!(infer_core_mve) {
            mve::requantize_right(self, values, channels, relu, out);
            return;
        }
        if relu {
            dsp::requantize_relu(self, values, channels, out);
            return;
        }
        dsp::requantize_int8(self, values, channels, out);
    }

    /// Whether whole positions of `channels` accumulators (at least one) fit `values`, a
    /// byte in `out` (if any) for each of their values, and parameters every channel: what
    /// the requantizing loops of assembly need.
    #[allow(dead_code)] // (Not on the Cortex-M0 nor the host.)
    pub(crate) fn positions_fit(
        &self,
        values: &[u32],
        channels: usize,
        out: Option<&[i8]>,
    ) -> bool {
        channels > 0
            && values.len() >= channels
            && out.is_none_or(|o| o.len() >= values.len() / channels * channels)
            && self.covers(channels)
    }

    /// Whether the parameters cover `channels` channels.
    pub(crate) fn covers(&self, channels: usize) -> bool {
        self.bias.len() / 4 >= channels
            && self.multiplier.len() / 4 >= channels
            && self.shift.len() >= channels
    }

    /// Whether the clamp is a ReLU's up to 127: the floor the zero point (in int8), the
    /// ceiling 127 (the clamp the ReLU's assembly takes, [`dsp::requantize_relu`]).
    pub(crate) fn is_relu_to_127(&self) -> bool {
        self.activation_min == self.output_offset
            && (-128..=127).contains(&self.output_offset)
            && self.activation_max == 127
    }

    /// Whether the clamp is the whole int8 range (no fused activation) and the zero point
    /// an int8 value (the clamp [`dsp::requantize_int8`]'s assembly takes).
    pub(crate) fn is_whole_int8(&self) -> bool {
        self.activation_min == -128
            && self.activation_max == 127
            && (-128..=127).contains(&self.output_offset)
    }

    /// Whether the floor is at or above the output zero point (a ReLU's).
    pub fn relu_floor(&self) -> bool {
        self.activation_min >= self.output_offset
    }

    /// [`ChannelRequant::requantize_positions`] for any requantization (a left shift
    /// too): each sum with its bias through [`ChannelRequant::apply`].
    #[inline(never)]
    pub(crate) fn requantize_each(
        &self,
        values: &mut [u32],
        channels: usize,
        out: Option<&mut [i8]>,
    ) {
        self.map_positions(values, channels, out, |acc, m, s| {
            self.apply(acc, dsp::word(m) as i32, i32::from(s))
        });
    }

    /// Replaces the accumulators of whole positions (`values`, `channels` per position) by
    /// the int8 values `f(sum, multiplier, shift)` (`sum` = the accumulator plus its
    /// channel's bias, wrapping; the multiplier's bytes, for `f` to read only if it needs
    /// them), into `out` or narrowed in place as [`Self::requantize_positions`] says;
    /// channels past the parameters get −128.
    #[inline(always)]
    pub(crate) fn map_positions(
        &self,
        values: &mut [u32],
        channels: usize,
        mut out: Option<&mut [i8]>,
        f: impl Fn(i32, &[u8; 4], i8) -> i8,
    ) {
        let channels = channels.max(1);
        let mut narrow = Narrowing::default();
        let mut at = 0;
        while at + channels <= values.len() {
            let mut params = self
                .bias
                .chunks_exact(4)
                .zip(self.multiplier.chunks_exact(4))
                .zip(self.shift);
            for _ in 0..channels {
                let Some(&acc) = values.get(at) else {
                    return;
                };
                let value = match params.next() {
                    Some(((bias, mult), &shift)) => {
                        match (bias.first_chunk(), mult.first_chunk()) {
                            (Some(bias), Some(mult)) => f(
                                (acc as i32).wrapping_add(dsp::word(bias) as i32),
                                mult,
                                shift as i8,
                            ),
                            _ => i8::MIN,
                        }
                    }
                    None => i8::MIN,
                };
                match out.as_deref_mut() {
                    Some(out) => {
                        if let Some(o) = out.get_mut(at) {
                            *o = value;
                        }
                    }
                    None => narrow.push(values, value),
                }
                at += 1;
            }
        }
        narrow.finish(values);
    }

    /// Requantizes accumulator `acc` (bias not yet added) of channel `channel`.
    #[inline(always)]
    pub fn apply(&self, acc: i32, multiplier: i32, shift: i32) -> i8 {
        crate::requant::requantize(
            acc,
            multiplier,
            shift,
            self.output_offset,
            self.activation_min,
            self.activation_max,
        )
    }
}

/// Whether every word of `words` is 0 (a patch's test for background), four words a step.
#[inline(always)]
pub(crate) fn all_zero(words: &[u32]) -> bool {
    let quads = words.chunks_exact(4);
    let rest = quads.remainder().iter().fold(0, |a, &w| a | w);
    quads.fold(rest, |a, q| a | q[0] | q[1] | q[2] | q[3]) == 0
}

/// Narrows int8 values into the words they come from, in order: value `i` into byte `i`
/// of the words' memory ([`dsp::int8_of_words`]), four to a word, each word written once
/// its four bytes are known. Word `i / 4` is at or before word `i`, so a caller that reads
/// word `i` before it pushes value `i` never overwrites a word it has yet to read.
#[derive(Default)]
pub(crate) struct Narrowing {
    /// The next word to write.
    word: usize,
    /// Its bytes so far, the first in the low bits.
    bytes: u32,
    /// Bits filled.
    shift: u32,
}

impl Narrowing {
    /// Pushes the next value.
    #[inline(always)]
    pub(crate) fn push(&mut self, words: &mut [u32], value: i8) {
        self.bytes |= u32::from(value as u8) << self.shift;
        self.shift += 8;
        if self.shift == 32 {
            self.put(words);
            self.word += 1;
            self.bytes = 0;
            self.shift = 0;
        }
    }

    /// Writes the word so far (its first byte at the lowest address).
    #[inline(always)]
    fn put(&self, words: &mut [u32]) {
        if let Some(w) = words.get_mut(self.word) {
            *w = u32::from_ne_bytes(self.bytes.to_le_bytes());
        }
    }

    /// Writes the last word's bytes (the rest of that word unspecified).
    #[inline(always)]
    pub(crate) fn finish(self, words: &mut [u32]) {
        if self.shift > 0 {
            self.put(words);
        }
    }
}

/// The first `n` values of `values` (int8 values as the `u32` bits of an `i32`: requantized
/// already) into `out`, or narrowed in place, as [`ChannelRequant::requantize_positions`]
/// puts its values.
#[inline(never)]
pub(crate) fn narrow(values: &mut [u32], n: usize, mut out: Option<&mut [i8]>) {
    let mut narrow = Narrowing::default();
    for i in 0..n.min(values.len()) {
        let Some(&v) = values.get(i) else {
            return;
        };
        match out.as_deref_mut() {
            Some(out) => {
                if let Some(o) = out.get_mut(i) {
                    *o = v as i8;
                }
            }
            None => narrow.push(values, v as i8),
        }
    }
    narrow.finish(values);
}

/// A stage's input or output map: whole, or its last `held` rows in a ring buffer (row `y`
/// at row `y % held` of `data`).
#[derive(Debug, Clone, Copy)]
pub struct MapRows<'m, T> {
    /// The rows held.
    pub data: T,
    /// How many rows `data` holds (`usize::MAX`: the whole map).
    held: NonZeroUsize,
    /// Lifetime of the data.
    _map: core::marker::PhantomData<&'m ()>,
}

impl<'m> MapRows<'m, &'m [i8]> {
    /// A whole map.
    pub fn whole(data: &'m [i8]) -> Self {
        Self::ring(data, usize::MAX)
    }
}

impl<'m> MapRows<'m, &'m mut [i8]> {
    /// A whole map, to write.
    pub fn whole_mut(data: &'m mut [i8]) -> Self {
        Self::ring(data, usize::MAX)
    }
}

impl<'m, T> MapRows<'m, T> {
    /// The last `held` rows (at least 1) of a map, in a ring buffer.
    pub fn ring(data: T, held: usize) -> Self {
        Self {
            data,
            held: NonZeroUsize::new(held).unwrap_or(NonZeroUsize::MIN),
            _map: core::marker::PhantomData,
        }
    }

    /// Whether the whole map is held (not a ring of its rows).
    pub fn is_whole(&self) -> bool {
        self.held.get() == usize::MAX
    }

    /// Where row `y` is held.
    #[inline(always)]
    pub fn slot(&self, y: usize) -> usize {
        if y < self.held.get() {
            y
        } else {
            y % self.held
        }
    }
}

/// Puts pixel sum `sum` of a multi-pixel conv kernel ([`dsp::quad_filters`],
/// [`mve::quad_filters_i8`], [`pairs::pair_filters`]) at `values[index]`: with `stride` 0
/// the pixels are one pool window's, and the sum is folded into that running max; otherwise
/// each pixel has values of its own, and the sum is stored.
#[inline(always)]
pub(crate) fn put_sum(values: &mut [u32], index: usize, stride: usize, sum: i32) {
    if let Some(v) = values.get_mut(index) {
        *v = if stride == 0 {
            (*v as i32).max(sum) as u32
        } else {
            sum as u32
        };
    }
}

/// Small deterministic generator for kernel tests.
#[cfg(test)]
pub(crate) struct TestRng(pub u64);

#[cfg(test)]
impl TestRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn i8(&mut self) -> i8 {
        self.next_u64() as i8
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}
