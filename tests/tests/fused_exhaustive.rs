//! The fused stages against the unfused reference on real data: every one of the 2,004 test
//! images, through the committed model (the tutorial's network, format 3), gives the same
//! wide logits in each of infer-core's inference paths — the typed stage the firmware runs
//! (`ConvPoolDense3x3`: the one-channel 3×3 streaming kernel), that kernel with plain and
//! with paired (SMLAD) inner loops (the DSP operations emulated on the host), the stage
//! plan with shapes known at run time (`stack::run` with `Kernels::Fast`) — and the
//! reference kernels operation by operation (`Kernels::Reference`).

use anyhow::{bail, Result};
use e2e_tests::{data_dir, workspace_root};
use infer_core::kernels::fused::{background_start, Stream3x3, StreamLayers, StreamScratch};
use infer_core::kernels::ChannelRequant;
use infer_core::probe::NoProbe;
use infer_core::stack::layers::{ConvPoolDense3x3, Layer, Logits};
use infer_core::stack::{Kernels, Op, StackFile};
use trainer::data;
use trainer::eval::StackBuffers;

/// The tutorial's network as the one fused stage its plan has.
type Tutorial<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false>;

#[test]
fn every_test_image_gives_identical_logits_in_every_path() -> Result<()> {
    let bytes = std::fs::read(workspace_root().join("firmware-example/assets/model.bin"))?;
    let file = StackFile::decode(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let stage = Tutorial::from_file(&file, 0).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (Some(Op::Conv2d(conv)), Some(Op::Dense(dense))) = (file.ops.get(0), file.ops.last())
    else {
        bail!("the committed model is not conv → pool → dense");
    };
    let layers = StreamLayers {
        input_offset: -file.input.quant.zero_point,
        conv_weights: conv.params.weights,
        conv: ChannelRequant::from_params(&conv.params, conv.relu),
        dense_input_offset: -conv.params.output.zero_point,
        dense_weights: dense.params.weights,
        dense: ChannelRequant::from_params(&dense.params, dense.relu),
    };
    let mut start = [0; 10];
    background_start::<32, 10>(&layers, 28, 28, &mut start);
    let test = data::load_test(&data_dir()?)?;
    assert_eq!(test.len(), 2004);
    let mut buffers = StackBuffers::new(&file);
    let mut scratch = Box::new(StreamScratch::<32, 10>::new());
    let mut distinct = std::collections::BTreeSet::new();
    for (i, image) in test.images.chunks_exact(784).enumerate() {
        let input: Vec<i8> = image.iter().map(|&p| (p ^ 0x80) as i8).collect();
        let reference = buffers.logits(&file, image, Kernels::Reference)?.to_vec();
        let fast = buffers.logits(&file, image, Kernels::Fast)?;
        assert_eq!(fast, reference, "image {i}: stack::run, fast kernels");
        let mut logits = [0i32; 10];
        stage.run_logits(&input, &mut [], &mut logits);
        assert_eq!(logits[..], reference, "image {i}: the typed stage");
        let mut paired = [0i32; 10];
        Stream3x3::<32, 10, true, false>::new(&layers, 28, 28, &input, &mut scratch, &start)
            .run_logits::<NoProbe>(&mut paired, 0);
        assert_eq!(paired[..], reference, "image {i}: stream, paired");
        let mut plain = [0i32; 10];
        Stream3x3::<32, 10, false, false>::new(&layers, 28, 28, &input, &mut scratch, &start)
            .run_logits::<NoProbe>(&mut plain, 0);
        assert_eq!(plain[..], reference, "image {i}: stream, plain");
        distinct.insert(reference);
    }
    // The logits depend on the image: a test that compares constants proves nothing.
    assert!(distinct.len() > 1_000, "{} distinct logits", distinct.len());
    Ok(())
}
