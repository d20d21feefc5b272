//! Residual blocks in the float model (`type = "residual"` in a spec; see
//! `model_spec::spec::Block`): a block is a chain of layers like any other, closed by an
//! [`Add`] of the previous output and an earlier tensor, with a [`Layer::Branch`] back to the
//! block's input before the shortcut's layers if it has any.
//!
//! A forward pass keeps the tensors a later branch or add reads ([`Saved`]); a backward pass
//! hands the gradient of an add to both its operands and that of a branch to the tensor it
//! reads, summing what reaches a tensor from both paths before the layer that computed it
//! goes back ([`Pending`]).

use super::kernels::mask_by_bits;
use super::layers::{clip_bits, Layer, Tensor, Trace};
use super::sliding::activate;
use super::spec::{LayerSpec, Shape, Spec};
use rayon::prelude::*;

/// A residual block's add (Keras' `Add()`, then the block's activation): the previous output
/// plus tensor `other`.
#[derive(Clone, Debug)]
pub struct Add {
    /// The other operand: 0 the model's input, `i + 1` the output of layer `i`.
    pub other: usize,
    /// ReLU after the sum.
    pub relu: bool,
    /// With `relu`, a ReLU6: the output also clipped at 6.
    pub relu6: bool,
}

impl Add {
    /// `x + other`, then the activation; keeps in `trace` which outputs the activation
    /// passed.
    fn forward(&self, mut x: Tensor, other: &Tensor, trace: Option<&mut Trace>) -> Tensor {
        let item = x.item_len();
        x.data
            .par_chunks_mut(item.max(1))
            .zip(other.data.par_chunks(item.max(1)))
            .for_each(|(y, b)| {
                y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                activate(y, self.relu, self.relu6);
            });
        if let Some(trace) = trace {
            trace.active = self.relu.then(|| clip_bits(&x.data, item, self.relu6));
        }
        x
    }

    /// The output gradient where the activation passed it: the gradient of both operands.
    fn backward(&self, mut dy: Tensor, trace: &mut Trace) -> Tensor {
        if let Some(active) = trace.active.take() {
            let item = dy.item_len();
            let words = item.div_ceil(64);
            dy.data
                .par_chunks_mut(item.max(1))
                .zip(active.par_chunks(words.max(1)))
                .for_each(|(dy, bits)| mask_by_bits(dy, bits));
        }
        dy
    }
}

/// Which tensors (0 the input, `i + 1` the output of layer `i`) a later layer than the next
/// reads again: residual blocks' inputs and main paths' outputs.
fn read_again(spec: &Spec) -> Vec<bool> {
    let mut read = vec![false; spec.layers.len() + 1];
    for layer in &spec.layers {
        if let LayerSpec::Branch { from: t } | LayerSpec::Add { other: t, .. } = *layer {
            read[t] = true;
        }
    }
    read
}

/// The tensors of one forward pass that later layers read again.
#[derive(Debug)]
pub struct Saved {
    read: Vec<bool>,
    tensors: Vec<Option<Tensor>>,
}

impl Saved {
    /// Nothing kept yet, for a forward pass of `spec`.
    pub fn new(spec: &Spec) -> Self {
        let read = read_again(spec);
        let tensors = read.iter().map(|_| None).collect();
        Self { read, tensors }
    }

    /// Whether tensor `t` is read again: a layer that computes it cannot be fused with the
    /// next.
    pub fn is_read(&self, t: usize) -> bool {
        self.read.get(t).copied().unwrap_or(false)
    }

    /// Keeps a copy of `x`, tensor `t`, if a later layer reads it (before a layer that
    /// [`Saved::step`] does not run).
    pub fn keep(&mut self, t: usize, x: &Tensor) {
        if self.is_read(t) {
            self.tensors[t] = Some(x.clone());
        }
    }

    /// Layer `index` on `x` (tensor `index`), keeping `x` first if a later layer reads it:
    /// `Ok` with the output of a branch or an add, which read a kept tensor; `Err(x)` for
    /// any other layer, which the caller runs.
    pub fn step(
        &mut self,
        index: usize,
        layer: &Layer,
        x: Tensor,
        trace: Option<&mut Trace>,
    ) -> Result<Tensor, Tensor> {
        self.keep(index, &x);
        // Each kept tensor has one reader: the block's branch, or its add.
        match layer {
            Layer::Branch { from } => Ok(self.tensors[*from].take().unwrap_or(x)),
            Layer::Add(add) => Ok(match self.tensors[add.other].take() {
                Some(other) => add.forward(x, &other, trace),
                None => x,
            }),
            _ => Err(x),
        }
    }
}

/// The gradients a backward pass has for earlier tensors from branches and adds.
#[derive(Debug)]
pub struct Pending {
    grads: Vec<Option<Tensor>>,
}

impl Pending {
    /// Nothing pending yet, for a backward pass of `spec`.
    pub fn new(spec: &Spec) -> Self {
        Self {
            grads: (0..=spec.layers.len()).map(|_| None).collect(),
        }
    }

    /// Backward of layer `index` if it is a branch or an add, `Ok` with the gradient of its
    /// input (tensor `index`; a branch does not read it: zeros of `input`'s shape); the
    /// gradient of the tensor it reads waits for [`Pending::collect`]. Any other layer:
    /// `Err(dy)`.
    pub fn backward(
        &mut self,
        layer: &Layer,
        dy: Tensor,
        input: Shape,
        trace: &mut Trace,
    ) -> Result<Tensor, Tensor> {
        match layer {
            Layer::Branch { from } => {
                let (h, w, c) = input.hwc();
                let n = dy.n;
                self.push(*from, dy);
                Ok(Tensor::zeros(n, h, w, c))
            }
            Layer::Add(add) => {
                let dx = add.backward(dy, trace);
                self.push(add.other, dx.clone());
                Ok(dx)
            }
            _ => Err(dy),
        }
    }

    /// The whole gradient of tensor `t`: `dy` from the next layer plus what later branches
    /// and adds left for it.
    pub fn collect(&mut self, t: usize, mut dy: Tensor) -> Tensor {
        if let Some(more) = self.grads.get_mut(t).and_then(Option::take) {
            dy.data
                .iter_mut()
                .zip(&more.data)
                .for_each(|(d, m)| *d += m);
        }
        dy
    }

    fn push(&mut self, t: usize, g: Tensor) {
        match &mut self.grads[t] {
            Some(sum) => sum.data.iter_mut().zip(&g.data).for_each(|(s, g)| *s += g),
            slot => *slot = Some(g),
        }
    }
}
