//! `trainer report`'s pictures hold what they claim: the convolutions are scipy's, pixel for
//! pixel; the probabilities are infer-core's and sum to 1; the filters and feature maps are
//! the model's.

mod report_support;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use report_support::{naive_convolve, naive_gray_in, quick_model, read_png, synthetic_digits};
use trainer::arch::layers::Layer;
use trainer::eval::{load_stack, Int8Model};
use trainer::report::conv::{convolve_same_symm, EDGE_KERNEL};
use trainer::report::{build, Grid, Inputs, Picture, Report};

fn report(seed: u64, float: bool) -> (Report, trainer::data::Dataset, Vec<u8>) {
    let test = synthetic_digits(40, 3);
    let (model, bytes) = quick_model(&test);
    let inputs = Inputs {
        model: &bytes,
        float: float.then_some(&model),
        epochs: None,
        test: &test,
        seed,
    };
    let report = build(&inputs).unwrap();
    (report, test, bytes)
}

/// Checks every raster of `picture` shows its grid: each value a `scale × scale` square of
/// its gray level on the raster's scale.
fn assert_rasters_are_drawn(picture: &Picture) {
    let (w, h, rgb) = read_png(&picture.png);
    assert_eq!((w, h), (picture.width, picture.height));
    for raster in &picture.rasters {
        let gray = naive_gray_in(&raster.grid.values, raster.range.0, raster.range.1);
        for (i, &g) in gray.iter().enumerate() {
            let (r, c) = ((i / raster.grid.cols) as u32, (i % raster.grid.cols) as u32);
            for dy in 0..raster.scale {
                for dx in 0..raster.scale {
                    let (x, y) = (
                        raster.x + c * raster.scale + dx,
                        raster.y + r * raster.scale + dy,
                    );
                    let at = (y * w + x) as usize * 3;
                    assert_eq!(
                        rgb[at..at + 3],
                        [g, g, g],
                        "{} pixel ({x}, {y})",
                        picture.file
                    );
                }
            }
        }
    }
}

#[test]
fn convolution_matches_a_naive_reference_on_small_images() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for (rows, cols) in [(1, 1), (1, 4), (2, 2), (3, 5), (6, 4), (7, 7)] {
        // Small integers: every sum is exact whatever its order, so equality is exact.
        let ints: Vec<f64> = (0..rows * cols)
            .map(|_| f64::from(rng.gen_range(-9i8..10)))
            .collect();
        let mut k = [[0.0f32; 3]; 3];
        for v in k.iter_mut().flatten() {
            *v = f32::from(rng.gen_range(-5i8..6));
        }
        let image = Grid {
            rows,
            cols,
            values: ints.clone(),
        };
        assert_eq!(
            convolve_same_symm(&image, &k).values,
            naive_convolve(&ints, rows, cols, &k),
            "{rows}×{cols}"
        );
        assert_eq!(
            convolve_same_symm(&image, &EDGE_KERNEL).values,
            naive_convolve(&ints, rows, cols, &EDGE_KERNEL)
        );
        // Reals: the same up to the order of nine additions.
        let reals: Vec<f64> = (0..rows * cols).map(|_| rng.gen_range(0.0..1.0)).collect();
        for v in k.iter_mut().flatten() {
            *v = rng.gen_range(-1.0f32..0.0);
        }
        let image = Grid {
            rows,
            cols,
            values: reals.clone(),
        };
        for (a, b) in convolve_same_symm(&image, &k)
            .values
            .iter()
            .zip(naive_convolve(&reals, rows, cols, &k))
        {
            assert!((a - b).abs() <= 1e-12, "{a} vs {b}");
        }
    }
}

#[test]
fn random_filter_and_edge_pictures_show_the_exact_convolutions() {
    let (report, test, _) = report(5, true);
    let s = &report.summary;
    let digit: Vec<f64> = test
        .image(s.digit)
        .unwrap()
        .iter()
        .map(|&p| f64::from(p) / 255.0)
        .collect();

    let random = &report.pictures[0];
    assert_eq!(random.file, "1-random-filters.png");
    // The digit, ten convolutions, ten filters, two colour bars.
    assert_eq!(random.rasters.len(), 23);
    assert_eq!(random.rasters[0].grid.values, digit);
    let convolutions = &random.rasters[1..11];
    let all: Vec<f64> = convolutions
        .iter()
        .flat_map(|r| r.grid.values.iter().copied())
        .collect();
    let shared = (
        all.iter().copied().fold(f64::INFINITY, f64::min),
        all.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    for (raster, filter) in convolutions.iter().zip(&s.random_filters) {
        assert!(filter.iter().flatten().all(|&v| (-1.0..0.0).contains(&v)));
        let expected = naive_convolve(&digit, 28, 28, filter);
        assert_eq!((raster.grid.rows, raster.grid.cols), (28, 28));
        for (a, b) in raster.grid.values.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-12, "{a} vs {b}");
        }
        // All ten on one gray scale, from the lowest value of any to the highest.
        assert_eq!(raster.range, shared);
    }
    // Each random filter is drawn (3×3, on the scale −1 black to 0 white).
    for (raster, filter) in random.rasters[11..21].iter().zip(&s.random_filters) {
        let entries: Vec<f64> = filter.iter().flatten().map(|&v| f64::from(v)).collect();
        assert_eq!((raster.grid.rows, raster.grid.cols), (3, 3));
        assert_eq!(raster.grid.values, entries);
        assert_eq!(raster.range, (-1.0, 0.0));
    }
    // Two colour bars: one over the convolutions' scale, one over the filters'.
    for (bar, range) in random.rasters[21..].iter().zip([shared, (-1.0, 0.0)]) {
        assert_eq!(bar.range, range);
        assert_eq!(bar.grid.range(), range);
        assert!(
            bar.grid.values.len() >= 100,
            "a bar of {}",
            bar.grid.values.len()
        );
    }
    // The scale's ends are written by the bar, and the caption names them.
    let end = |v: f64| format!("{v:.1}").replace('-', "−");
    assert!(
        random.caption.contains(&end(shared.0)) && random.caption.contains(&end(shared.1)),
        "{}",
        random.caption
    );
    assert_rasters_are_drawn(random);

    let edge = &report.pictures[1];
    assert_eq!(edge.file, "2-edge-detection.png");
    assert_eq!(edge.rasters.len(), 2);
    assert_eq!(edge.rasters[0].grid.values, digit);
    let expected = naive_convolve(&digit, 28, 28, &EDGE_KERNEL);
    for (a, b) in edge.rasters[1].grid.values.iter().zip(&expected) {
        assert!((a - b).abs() <= 1e-12, "{a} vs {b}");
    }
    assert_rasters_are_drawn(edge);
    assert_rasters_are_drawn(&report.pictures[2]);
    assert_rasters_are_drawn(&report.pictures[5]);
    assert_rasters_are_drawn(&report.pictures[6]);
}

#[test]
fn plotted_probabilities_are_infer_cores_and_sum_to_one() {
    let (report, test, bytes) = report(9, false);
    let net = Int8Model::load(&bytes).unwrap();
    let s = &report.summary;
    let shown = [Some(&s.random_digit), s.misclassified.as_ref()];
    assert!(
        s.misclassified.is_some(),
        "an untrained model gets some wrong"
    );
    for seen in shown.into_iter().flatten() {
        let (class, probabilities) = net.classify(test.image(seen.index).unwrap()).unwrap();
        assert_eq!(seen.probabilities[..], probabilities[..]);
        assert_eq!(usize::from(seen.predicted), class);
        assert_eq!(seen.label, test.labels[seen.index]);
        let sum: f32 = seen.probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "probabilities sum to {sum}");
        assert!(seen.probabilities.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
    let wrong = s.misclassified.as_ref().unwrap();
    assert_ne!(wrong.predicted, wrong.label);
    // The pictures show the digit they name.
    let digit = |i: usize| -> Vec<f64> {
        test.image(i)
            .unwrap()
            .iter()
            .map(|&p| f64::from(p) / 255.0)
            .collect()
    };
    assert_eq!(
        report.pictures[2].rasters[0].grid.values,
        digit(s.random_digit.index)
    );
    assert_eq!(
        report.pictures[3].rasters[0].grid.values,
        digit(wrong.index)
    );

    // Histograms and confusion matrix count the same test set.
    let h = &s.histogram;
    assert_eq!(h.all_count, test.len());
    let wrong_count = (0..10)
        .map(|t| {
            (0..10)
                .filter(|&p| p != t)
                .map(|p| s.confusion[t][p])
                .sum::<usize>()
        })
        .sum::<usize>();
    assert_eq!(h.wrong_count, wrong_count);
    assert_eq!(s.confusion.iter().flatten().sum::<usize>(), test.len());
    for density in [&h.all, &h.wrong] {
        let area: f64 = density
            .iter()
            .zip(h.edges.windows(2))
            .map(|(d, e)| d * (e[1] - e[0]))
            .sum();
        // Densities are rounded to 6 significant digits.
        assert!((area - 1.0).abs() < 1e-5, "{area}");
    }
}

#[test]
fn filters_and_feature_maps_are_the_models() {
    let test = synthetic_digits(40, 3);
    let (model, bytes) = quick_model(&test);
    let (with_float, _, _) = report(5, true);
    let (with_int8, _, _) = report(5, false);
    let float_filters = &with_float.pictures[5].rasters;
    let int8_filters = &with_int8.pictures[5].rasters;
    assert_eq!(float_filters.len(), 32);
    assert_eq!(int8_filters.len(), 32);
    let file = load_stack(&bytes).unwrap();
    let Some(infer_core::stack::Op::Conv2d(conv)) = file.ops.get(0) else {
        panic!("the tutorial starts with a convolution")
    };
    let Layer::Conv(float_conv) = &model.layers[0] else {
        panic!("the tutorial starts with a convolution")
    };
    // HWIO: tap t of filter f at t · 32 + f.
    let weight = |f: usize, t: usize| float_conv.kernel.value[t * 32 + f];
    let scales: Vec<f64> = conv
        .params
        .weight_scales
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    for f in 0..32 {
        for (i, (&a, &b)) in float_filters[f]
            .grid
            .values
            .iter()
            .zip(&int8_filters[f].grid.values)
            .enumerate()
        {
            let w = f64::from(weight(f, i));
            assert_eq!(a, w, "float filter {f} tap {i}");
            // Symmetric int8: within half a step of the float weight.
            assert!(
                (b - w).abs() <= scales[f] / 2.0 + 1e-9,
                "int8 filter {f} tap {i}: {b} vs {w}"
            );
        }
    }

    // Feature maps: infer-core's int8 conv + ReLU, close to the float model's.
    let digit = with_int8.summary.digit;
    let maps = &with_int8.pictures[6].rasters;
    assert_eq!(maps.len(), 32);
    let pixels = test.image(digit).unwrap();
    // The float conv + ReLU, written out: valid 3×3 over pixels / 255.
    let float_map = |f: usize, y: usize, x: usize| -> f64 {
        let mut sum = f64::from(float_conv.bias.value[f]);
        for t in 0..9 {
            let p = f64::from(pixels[(y + t / 3) * 28 + x + t % 3]) / 255.0;
            sum += f64::from(weight(f, t)) * p;
        }
        sum.max(0.0)
    };
    let out_scale = f64::from(conv.params.output.scale);
    for (f, map) in maps.iter().enumerate() {
        assert_eq!((map.grid.rows, map.grid.cols), (26, 26));
        for (i, &v) in map.grid.values.iter().enumerate() {
            let reference = float_map(f, i / 26, i % 26);
            // Output rounding (half a step) + nine weights each off by up to half their step.
            let bound = out_scale / 2.0 + 4.5 * scales[f] + 1e-6;
            assert!(v >= 0.0);
            assert!(
                (v - reference).abs() <= bound,
                "map {f} pixel {i}: {v} vs {reference} (±{bound})"
            );
        }
    }
}

#[test]
fn a_model_without_mistakes_gets_a_note_instead_of_picture_4() {
    let mut test = synthetic_digits(30, 4);
    let (_, bytes) = quick_model(&test);
    test.labels = trainer::eval::evaluate_int8(&bytes, &test)
        .unwrap()
        .predictions;
    let inputs = Inputs {
        model: &bytes,
        float: None,
        epochs: None,
        test: &test,
        seed: 1,
    };
    let report = build(&inputs).unwrap();
    assert!(report.summary.misclassified.is_none());
    assert_eq!(report.summary.int8_accuracy, 1.0);
    assert!(report.pictures[3].rasters.is_empty());
    assert_eq!(report.summary.histogram.wrong_count, 0);
    assert!(report.summary.histogram.wrong.iter().all(|&d| d == 0.0));
    for (picture, (file, w, h)) in report.pictures.iter().zip(report_support::PICTURES) {
        assert_eq!(picture.file, file);
        let (width, height, _) = read_png(&picture.png);
        assert_eq!((width, height), (w, h), "{file}");
    }
}

#[test]
fn the_seed_decides_every_choice() {
    let (a, _, _) = report(21, false);
    let (b, _, _) = report(21, false);
    let (c, _, _) = report(22, false);
    for (x, y) in a.pictures.iter().zip(&b.pictures) {
        assert_eq!(x.png, y.png, "{}", x.file);
    }
    assert_ne!(a.summary.random_filters, c.summary.random_filters);
}

#[test]
fn every_probability_bar_is_labelled_with_its_value() {
    let (report, _, _) = report(9, false);
    let (w, _, rgb) = read_png(&report.pictures[3].png);
    let pixel = |x: i32, y: i32| {
        let at = (y as u32 * w + x as u32) as usize * 3;
        [rgb[at], rgb[at + 1], rgb[at + 2]]
    };
    for (picture, seen) in [
        (&report.pictures[2], &report.summary.random_digit),
        (
            &report.pictures[3],
            report.summary.misclassified.as_ref().unwrap(),
        ),
    ] {
        assert_eq!(picture.labels.len(), 10, "{}", picture.file);
        let mut previous_x = 0;
        for (class, (label, &p)) in picture.labels.iter().zip(&seen.probabilities).enumerate() {
            let expected = if p > 0.0 && p < 0.005 {
                "<0.01".to_string()
            } else {
                format!("{p:.2}")
            };
            assert_eq!(label.text, expected, "{} class {class}", picture.file);
            // Left to right, one per bar.
            assert!(
                label.x > previous_x + 20,
                "{}: {:?}",
                picture.file,
                picture.labels
            );
            previous_x = label.x;
        }
    }
    // The true digit's value is written in the true digit's green, visibly (however small
    // its bar), in picture 4.
    let wrong = report.summary.misclassified.as_ref().unwrap();
    let label = &report.pictures[3].labels[usize::from(wrong.label)];
    let green = (label.y..label.y + label.size as i32)
        .flat_map(|y| (label.x - 16..label.x + 16).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let [r, g, b] = pixel(x, y);
            g > r + 40 && g > b + 40
        })
        .count();
    assert!(
        green >= 10,
        "{green} green pixels in the true class's label {label:?}"
    );
}

#[test]
fn panel_numbers_sit_by_their_own_panel_clear_of_the_row_above() {
    let (report, _, _) = report(5, false);
    for picture in &report.pictures[5..7] {
        let (w, _, rgb) = read_png(&picture.png);
        let ink = |x: u32, y: u32| {
            let at = (y * w + x) as usize * 3;
            rgb[at..at + 3].iter().any(|&c| c < 200)
        };
        let rasters = &picture.rasters;
        for panel in rasters {
            let size = panel.grid.rows as u32 * panel.scale;
            // The panel right above, if any (same column).
            let Some(above) = rasters
                .iter()
                .filter(|r| r.x == panel.x && r.y < panel.y)
                .max_by_key(|r| r.y)
            else {
                continue;
            };
            let above_bottom = above.y + size; // its frame's last row
            let panel_top = panel.y - 1; // this panel's frame's first row
            let rows: Vec<u32> = (above_bottom + 1..panel_top)
                .filter(|&y| (panel.x..panel.x + size).any(|x| ink(x, y)))
                .collect();
            let (first, last) = (rows[0], rows[rows.len() - 1]);
            let gap_above = first - above_bottom - 1;
            let gap_below = panel_top - last - 1;
            assert!(
                gap_below >= 2 && gap_above >= 2 * gap_below,
                "{}: the number over the panel at ({}, {}) is {gap_above} px below the row above \
                 and {gap_below} px above its own panel",
                picture.file,
                panel.x,
                panel.y
            );
        }
    }
}
