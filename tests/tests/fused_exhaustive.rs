//! The streaming kernels against the unfused reference on real data: every one of the
//! 2,004 test images, through the committed model, gives the same int8 logits in each of
//! infer-core's inference paths — `TutorialNet::infer` (on the host the wide kernel),
//! the microcontrollers' stream with plain and with paired (SMLAD) inner loops (the DSP
//! operations emulated on the host), and the layer-by-layer reference `infer_layers`.

use anyhow::Result;
use e2e_tests::{data_dir, workspace_root};
use infer_core::{pixels_to_input, TutorialNet, TutorialScratch, TutorialStreamScratch};
use trainer::data;

#[test]
fn every_test_image_gives_identical_logits_in_every_path() -> Result<()> {
    let bytes = std::fs::read(workspace_root().join("firmware-example/assets/model.bin"))?;
    let net = TutorialNet::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let test = data::load_test(&data_dir()?)?;
    assert_eq!(test.len(), 2004);
    let mut scratch = Box::new(TutorialScratch::new());
    let mut stream_scratch = Box::new(TutorialStreamScratch::new());
    for (i, image) in test.images.chunks_exact(784).enumerate() {
        let mut pixels = [[0u8; 28]; 28];
        for (row, src) in pixels.iter_mut().zip(image.chunks_exact(28)) {
            row.copy_from_slice(src);
        }
        let input = pixels_to_input(&pixels);
        let reference = net.infer_layers(&input, &mut scratch);
        assert_eq!(net.infer(&input), reference, "image {i}: infer");
        for paired in [false, true] {
            let mut logits = [0i8; 10];
            if paired {
                net.stream::<true>(&input, &mut stream_scratch)
                    .expect("the tutorial takes the fast path")
                    .run(&mut logits);
            } else {
                net.stream::<false>(&input, &mut stream_scratch)
                    .expect("the tutorial takes the fast path")
                    .run(&mut logits);
            }
            assert_eq!(
                net.output(logits),
                reference,
                "image {i}: stream, paired={paired}"
            );
        }
    }
    Ok(())
}
