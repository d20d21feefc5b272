//! `trainer fit --arch` and `trainer summary --arch/--board` from the outside: a spec file of
//! one's own trains with no code edit, the tutorial preset trains through the generic layers like any spec
//! file (format 2, the same bytes as `models/tutorial.toml`), and the full
//! model's table has Keras' 1,199,882 parameters. The format-2 export: `arch_export.rs`.

mod cli_support;

use cli_support::{assert_clean_failure, data_dir, s, trainer_command, trainer_ok};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network of our own: strided same-padded conv, batch norm (with the ReLU, so that int8
/// export folds it), pooling, two dense layers.
const OWN: &str = "# mine
name = \"mine\"
input = [28, 28, 1]

[[layer]]
type = \"conv2d\"
filters = 6
kernel = 5
stride = 2
padding = \"same\"

[[layer]]
type = \"batchnorm\"
activation = \"relu\"

[[layer]]
type = \"maxpool2d\"
pool = 2

[[layer]]
type = \"flatten\"

[[layer]]
type = \"dense\"
units = 16
activation = \"relu\"

[[layer]]
type = \"dropout\"
rate = 0.3

[[layer]]
type = \"dense\"
units = 10
activation = \"softmax\"
";

#[test]
fn a_spec_of_ones_own_trains_with_every_option_and_writes_all_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 200, 50);
    let spec = dir.path().join("mine.toml");
    std::fs::write(&spec, OWN).unwrap();
    let (out, float, metrics) = (
        dir.path().join("model.bin"),
        dir.path().join("mine.f32"),
        dir.path().join("metrics.json"),
    );
    trainer_ok(&[
        "fit",
        "--data",
        s(&data),
        "--arch",
        s(&spec),
        "--out",
        s(&out),
        "--save-float",
        s(&float),
        "--metrics",
        s(&metrics),
        "--epochs",
        "3",
        "--batch-size",
        "32",
        "--threads",
        "2",
        "--l2",
        "0.0001",
        "--l1",
        "0.00001",
        "--early-stopping-patience",
        "2",
    ]);
    trainer::eval::load_stack(&std::fs::read(&out).unwrap()).unwrap();
    let model = trainer::arch::checkpoint::load(&float).unwrap();
    assert_eq!(model.spec.name, "mine");
    assert_eq!(model.spec.shapes[0].dims(), [14, 14, 6]);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metrics).unwrap()).unwrap();
    assert_eq!(json["params"], model.parameter_count());
    let epochs = json["epochs"].as_array().unwrap();
    assert!(!epochs.is_empty() && epochs.len() <= 3);
    for key in ["loss", "acc", "val_loss", "val_acc", "seconds"] {
        assert!(epochs[0][key].is_number(), "{key}");
    }
    let accuracy = json["test_accuracy_f32"].as_f64().unwrap();
    assert!(
        accuracy > 0.5,
        "the synthetic digits were not learnt: {accuracy}"
    );
    assert!(json["test_accuracy_int8"].is_number());
    assert_eq!(json["int8_exported"], true);
}

#[test]
fn arch_tutorial_is_the_generic_path_and_the_same_bytes_as_its_spec_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 120, 30);
    let fit = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut args = vec![
            "fit",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--epochs",
            "1",
            "--batch-size",
            "32",
        ];
        args.extend_from_slice(extra);
        trainer_ok(&args);
        std::fs::read(out).unwrap()
    };
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tutorial.toml");
    let from_file = fit("file.bin", &["--arch", file]);
    let preset = fit("preset.bin", &["--arch", "tutorial"]);
    assert_eq!(from_file, preset);
    // Plain `trainer fit` is `trainer fit --arch tutorial`.
    let plain = fit("plain.bin", &[]);
    assert_eq!(plain, preset);
    // Format 3: magic, then the version (u16 little-endian).
    let magic = infer_core::format::MAGIC;
    assert_eq!(&preset[..magic.len()], &magic[..]);
    assert_eq!(
        u16::from_le_bytes([preset[magic.len()], preset[magic.len() + 1]]),
        infer_core::stack::STACK_FORMAT_VERSION
    );
}

#[test]
fn bad_specs_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    std::fs::write(
        &spec,
        OWN.replace("type = \"flatten\"\n", "type = \"dropout\"\nrate = 0.1\n"),
    )
    .unwrap();
    let out = trainer_command()
        .args(["summary", "--arch", s(&spec)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("layer 4 (dense)") && err.contains("add a `flatten`"),
        "{err}"
    );
}

#[test]
fn residual_specs_that_cannot_train_or_export_are_refused_before_training_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 40, 10);
    let resnet = include_str!("../../models/resnet-tiny.toml");
    let shortcut = "[[layer.shortcut]]\ntype = \"conv2d\"\nfilters = 16\nkernel = 1\nstride = 2\n";
    // The second block without its shortcut; then with a batch norm on its input.
    let cases = [
        (
            resnet.replace(shortcut, ""),
            vec!["layer 6 (residual) at line 39", "kernel = 1, stride = 2"],
        ),
        (
            resnet.replacen(
                "[[layer.main]]",
                "[[layer.main]]\ntype = \"batchnorm\"\n\n[[layer.main]]",
                1,
            ),
            vec![
                "layer 1 (batchnorm)",
                "a residual block reads that layer's output",
            ],
        ),
    ];
    for (text, expected) in cases {
        let spec = dir.path().join("bad.toml");
        std::fs::write(&spec, text).unwrap();
        let out = dir.path().join("model.bin");
        let fit = trainer_command()
            .args([
                "fit",
                "--data",
                s(&data),
                "--arch",
                s(&spec),
                "--out",
                s(&out),
            ])
            .output()
            .unwrap();
        assert_clean_failure(&fit, &expected);
        assert!(!out.exists(), "nothing written");
        assert!(
            !String::from_utf8_lossy(&fit.stdout).contains("Epoch"),
            "refused before the first epoch"
        );
    }
}

#[test]
fn summary_of_the_full_model_has_keras_parameter_count_and_says_where_it_fits() {
    let out = stdout(&trainer_ok(&["summary", "--arch", "tutorial-full"]));
    assert!(out.contains("Total params: 1,199,882 (4.58 MB)"), "{out}");
    assert!(
        out.contains("│ conv2d_1 (Conv2D)               │ (None, 24, 24, 64)"),
        "{out}"
    );
    // Does not fit: said, and the exit status says so too.
    let micro = trainer_command()
        .args(["summary", "--arch", "tutorial-full", "--board", "microbit"])
        .output()
        .unwrap();
    assert_eq!(micro.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&micro.stderr)
        .contains("error: the model does not fit on microbit: flash 1,2"));
    let micro = stdout(&micro);
    assert!(
        micro.contains("This model does not fit on microbit."),
        "{micro}"
    );
    let mps2 = stdout(&trainer_ok(&[
        "summary",
        "--arch",
        "tutorial-full",
        "--board",
        "mps2-an386",
    ]));
    assert!(mps2.contains("This model fits on mps2-an386"), "{mps2}");
    // Both sides of the RAM/instruction trade: the default build's RAM (four conv pixels at
    // once) and the small-RAM build's (one), each as model-spec's budget has it; on the
    // Cortex-M0, whose kernels take one pixel at a time, the default build is the small one.
    let spec = model_spec::Spec::load("tutorial-full").unwrap();
    let ram = |pixels| {
        let ram = model_spec::budget::Budget::of(&spec, pixels).unwrap().ram;
        ram.to_string()
            .as_bytes()
            .rchunks(3)
            .rev()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(",")
    };
    let (four, one) = (
        ram(infer_core::stack::Pixels::Four),
        ram(infer_core::stack::Pixels::One),
    );
    assert_ne!(four, one);
    assert!(
        mps2.contains(&format!(
            "RAM    per inference through the fused stages: {four} bytes"
        )),
        "{mps2}"
    );
    assert!(
        mps2.contains(&format!("RAM    of the small-RAM build (--small-ram: one conv pixel at a time, more instructions; cargo xtask bench-mcu --small-ram measures them): {one} bytes")),
        "{mps2}"
    );
    assert!(
        micro.contains(&format!(
            "RAM    per inference through the fused stages: {one} bytes"
        )),
        "{micro}"
    );
    assert!(!micro.contains("small-RAM build"), "{micro}");
    let json = trainer_command()
        .args([
            "summary",
            "--arch",
            "tutorial-full",
            "--board",
            "microbit",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["total_params"], 1_199_882);
    assert_eq!(json["board"]["fits"], false);
}

#[test]
fn the_tutorial_preset_gives_the_tutorials_own_table() {
    let plain = stdout(&trainer_ok(&["summary"]));
    let preset = stdout(&trainer_ok(&["summary", "--arch", "tutorial"]));
    let table = |t: &str| t.split("\n\n").next().unwrap().to_owned();
    assert_eq!(table(&plain), table(&preset));
    assert_eq!(plain, preset);
    assert!(table(&plain).contains("54,410"));
    let board = stdout(&trainer_ok(&["summary", "--board", "microbit"]));
    let preset = stdout(&trainer_ok(&[
        "summary", "--arch", "tutorial", "--board", "microbit",
    ]));
    assert_eq!(board, preset);
    assert!(board.contains("Board microbit"), "{board}");
}
