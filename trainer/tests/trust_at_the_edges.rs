//! Issue 12, "trust at the edges", through the real `trainer` binary in temporary
//! directories: nothing already written is lost when a command fails, every output location
//! is checked before any work, a run that cannot write what it was asked for fails before it
//! starts, sizes are checked before allocating, a closed pipe ends a command quietly, and
//! argument errors are in the user's words. (Ctrl-C and SIGTERM exit 130 and 143:
//! `fit_cli.rs`; `summary --arch --board` that does not fit: `arch_cli.rs`.)

mod cli_support;

use cli_support::{assert_clean_failure, data_dir, names, s, trainer, trainer_command, trainer_ok};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

const PREVIOUS: &[u8] = b"yesterday's file";

/// A temporary directory with a small synthetic data set (`data/`, 120 training and 30 test
/// images) and files holding [`PREVIOUS`] where earlier runs left them.
struct Case {
    dir: tempfile::TempDir,
    data: PathBuf,
}

impl Case {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = data_dir(dir.path(), 120, 30);
        Self { dir, data }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name` holding [`PREVIOUS`].
    fn previous(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, PREVIOUS).unwrap();
        path
    }

    /// `trainer fit` on the case's data, one quick epoch, with `more` arguments.
    fn fit(&self, more: &[&str]) -> Output {
        let mut args = vec![
            "fit",
            "--data",
            s(&self.data),
            "--epochs",
            "1",
            "--train-limit",
            "60",
        ];
        args.extend_from_slice(more);
        trainer(&args)
    }

    /// [`Case::fit`] with `more` arguments writing `--out`, `--save-float` and `--metrics`.
    fn fit_writing(&self, more: &[&str], [out, float, metrics]: [&Path; 3]) -> Output {
        let mut args = more.to_vec();
        args.extend([
            "--out",
            s(out),
            "--save-float",
            s(float),
            "--metrics",
            s(metrics),
        ]);
        self.fit(&args)
    }

    /// A trained tutorial model.bin and its float checkpoint, written once per case.
    fn trained(&self) -> (PathBuf, PathBuf) {
        let (model, float) = (self.path("trained.bin"), self.path("trained.f32"));
        if !model.exists() {
            let out = self.fit(&["--out", s(&model), "--save-float", s(&float)]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (model, float)
    }

    /// Writes a spec file `name` and returns its path.
    fn spec(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fails unless `out` failed cleanly with `expected` in stderr and never started training.
fn refused_before_training(out: &Output, expected: &[&str]) {
    assert_clean_failure(out, expected);
    assert!(
        !stdout(out).contains("Epoch"),
        "it trained: {}",
        stdout(out)
    );
}

/// A spec: the tutorial's input, then `layers` (TOML `[[layer]]` tables).
fn spec_text(layers: &[&str]) -> String {
    let mut text = String::from("name = \"case\"\ninput = [28, 28, 1]\n");
    for layer in layers {
        text += "\n[[layer]]\n";
        text += layer;
        text += "\n";
    }
    text
}

const FLATTEN: &str = "type = \"flatten\"";
const SOFTMAX_10: &str = "type = \"dense\"\nunits = 10\nactivation = \"softmax\"";

#[test]
fn item_1_an_unwritable_output_is_refused_before_any_work_and_nothing_is_replaced() {
    let case = Case::new();
    let out = case.previous("prev.bin");
    let metrics = case.previous("prev.json");
    // A directory that takes no new file (even for root): /proc.
    for (flag, unwritable) in [
        ("--save-float", "/proc/x.f32"),
        ("--metrics", "/proc/metrics.json"),
        ("--out", "/proc/model.bin"),
    ] {
        let mut args = vec!["--out", s(&out), "--metrics", s(&metrics)];
        match flag {
            "--out" => args[1] = unwritable,
            "--metrics" => args[3] = unwritable,
            _ => args.extend([flag, unwritable]),
        }
        let run = case.fit(&args);
        refused_before_training(&run, &[flag, unwritable, "cannot create a file in /proc"]);
        assert_eq!(std::fs::read(&out).unwrap(), PREVIOUS, "{flag}");
        assert_eq!(std::fs::read(&metrics).unwrap(), PREVIOUS, "{flag}");
    }
    // quantize checks --out before it even reads its checkpoint.
    let run = trainer(&[
        "quantize",
        "--float",
        "no-such.f32",
        "--data",
        s(&case.data),
        "--out",
        "/proc/model.bin",
    ]);
    assert_clean_failure(&run, &["--out /proc/model.bin"]);
    assert!(!String::from_utf8_lossy(&run.stderr).contains("no-such.f32"));
    // A failing fit (here: diverging) leaves every previous output as it was, and no
    // temporary file behind.
    let float = case.previous("prev.f32");
    let before = names(case.dir.path());
    let run = case.fit_writing(&["--lr", "1e9"], [&out, &float, &metrics]);
    assert_clean_failure(
        &run,
        &["nothing written", "prev.bin, ", "left as they were"],
    );
    for path in [&out, &float, &metrics] {
        assert_eq!(std::fs::read(path).unwrap(), PREVIOUS);
    }
    assert_eq!(names(case.dir.path()), before);
}

#[test]
fn item_2_two_outputs_on_one_file_or_an_output_on_an_input_are_refused() {
    let case = Case::new();
    let same = case.previous("same.bin");
    let spelled_otherwise = case.dir.path().join(".").join("same.bin");
    let run = case.fit(&["--out", s(&same), "--save-float", s(&spelled_otherwise)]);
    refused_before_training(&run, &["--out", "--save-float", "are the same file"]);
    let run = case.fit(&[
        "--out",
        s(&case.path("m.bin")),
        "--metrics",
        s(&same),
        "--save-float",
        s(&same),
    ]);
    refused_before_training(&run, &["--metrics", "--save-float", "are the same file"]);
    assert_eq!(std::fs::read(&same).unwrap(), PREVIOUS);
    // quantize --out onto its own --float checkpoint.
    let input = case.previous("x.f32");
    let run = trainer(&["quantize", "--float", s(&input), "--out", s(&input)]);
    assert_clean_failure(&run, &["would overwrite the input --float"]);
    assert_eq!(std::fs::read(&input).unwrap(), PREVIOUS);
    // fit writing over its spec or its data.
    let spec = case.spec("mine.toml", &spec_text(&[FLATTEN, SOFTMAX_10]));
    let text = std::fs::read(&spec).unwrap();
    let run = case.fit(&["--arch", s(&spec), "--out", s(&spec)]);
    refused_before_training(&run, &["would overwrite the input --arch"]);
    assert_eq!(std::fs::read(&spec).unwrap(), text);
    // report --out onto the directory holding its --metrics, named as one of its files.
    let (model, _) = case.trained();
    let report = case.path("report");
    std::fs::create_dir(&report).unwrap();
    let metrics = report.join("report.json");
    let run = case.fit(&["--out", s(&case.path("m.bin")), "--metrics", s(&metrics)]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let written = std::fs::read(&metrics).unwrap();
    let run = trainer(&[
        "report",
        "--model",
        s(&model),
        "--metrics",
        s(&metrics),
        "--data",
        s(&case.data),
        "--out",
        s(&report),
    ]);
    assert_clean_failure(&run, &["would overwrite the input --metrics"]);
    assert_eq!(std::fs::read(&metrics).unwrap(), written);
    assert_eq!(
        names(&report),
        ["report.json"],
        "the report was partly written"
    );
    let labels = case.data.join("train-labels-idx1-ubyte");
    let labels_before = std::fs::read(&labels).unwrap();
    let run = case.fit(&["--out", s(&case.path("m.bin")), "--metrics", s(&labels)]);
    refused_before_training(&run, &["would overwrite the input --data"]);
    let run = trainer(&[
        "quantize",
        "--float",
        "x.f32",
        "--data",
        s(&case.data),
        "--out",
        s(&labels),
    ]);
    assert_clean_failure(&run, &["--out", "would overwrite the input --data"]);
    assert_eq!(std::fs::read(&labels).unwrap(), labels_before);
}

#[test]
fn item_3_missing_directories_are_not_created() {
    let case = Case::new();
    let missing = case.path("missing");
    let deep = missing.join("dir").join("model.bin");
    let run = case.fit(&["--out", s(&deep)]);
    refused_before_training(
        &run,
        &["--out", "the directory", "does not exist (create it first)"],
    );
    let run = case.fit(&["--out", s(&case.path("m.bin")), "--metrics", s(&deep)]);
    refused_before_training(&run, &["--metrics", "does not exist"]);
    let run = trainer(&["quantize", "--float", "x.f32", "--out", s(&deep)]);
    assert_clean_failure(&run, &["--out", "does not exist"]);
    assert!(!missing.exists(), "a missing directory was created");
    // report --out DIR may create DIR, not its parents.
    let (model, _) = case.trained();
    let report = |out: &Path| {
        trainer(&[
            "report",
            "--model",
            s(&model),
            "--data",
            s(&case.data),
            "--out",
            s(out),
        ])
    };
    let run = report(&missing.join("report"));
    assert_clean_failure(&run, &["--out", "does not exist"]);
    assert!(!missing.exists(), "report created the parent of its --out");
    let fresh = case.path("report");
    let run = report(&fresh);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(fresh.join("index.html").is_file());
}

#[test]
fn items_4_and_9_a_spec_fit_would_not_export_is_refused_before_the_first_epoch() {
    let case = Case::new();
    let relu_then_batch_norm = spec_text(&[
        "type = \"conv2d\"\nfilters = 4\nkernel = 3\nactivation = \"relu\"",
        "type = \"batchnorm\"",
        FLATTEN,
        SOFTMAX_10,
    ]);
    let twelve_classes = spec_text(&[
        FLATTEN,
        "type = \"dense\"\nunits = 12\nactivation = \"softmax\"",
    ]);
    let mut too_many = vec![FLATTEN];
    too_many.extend(std::iter::repeat_n(
        "type = \"dense\"\nunits = 8\nactivation = \"relu\"",
        33,
    ));
    too_many.push(SOFTMAX_10);
    let too_many_operations = spec_text(&too_many);
    let wide = spec_text(&[
        "type = \"conv2d\"\nfilters = 70000\nkernel = 3\nactivation = \"relu\"",
        FLATTEN,
        SOFTMAX_10,
    ]);
    for (name, text, reason) in [
        (
            "relu-bn.toml",
            relu_then_batch_norm.as_str(),
            "layer 1 (batchnorm): int8 export folds batch norm",
        ),
        (
            "twelve.toml",
            twelve_classes.as_str(),
            "the last layer has 12 outputs but the data has 10 classes",
        ),
        (
            "too-many.toml",
            too_many_operations.as_str(),
            "the int8 plan has 34 operations",
        ),
        (
            "wide.toml",
            wide.as_str(),
            "dimension 70000 does not fit model.bin's 16-bit fields",
        ),
    ] {
        let spec = case.spec(name, text);
        let (out, float, metrics) = (case.path("m.bin"), case.path("m.f32"), case.path("m.json"));
        let run = case.fit_writing(&["--arch", s(&spec)], [&out, &float, &metrics]);
        refused_before_training(&run, &[name, "cannot be trained into a model.bin", reason]);
        assert!(
            !out.exists() && !float.exists() && !metrics.exists(),
            "{name} wrote a file"
        );
        // summary --arch reports the same problem, and fails too.
        let summary = trainer(&["summary", "--arch", s(&spec)]);
        assert_clean_failure(&summary, &[name, "trainer fit refuses it", reason]);
        assert!(
            stdout(&summary).contains("Total params"),
            "{name}: the table is still shown"
        );
        let json = trainer(&["summary", "--arch", s(&spec), "--json"]);
        assert!(!json.status.success());
        let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert!(
            json["int8_unavailable"].as_str().unwrap().contains(reason),
            "{json}"
        );
    }
}

#[test]
fn item_5_a_diverging_fit_names_the_epoch_and_suggests_a_smaller_learning_rate() {
    let case = Case::new();
    let out = case.path("m.bin");
    let run = case.fit(&["--lr", "1e9", "--out", s(&out)]);
    assert_clean_failure(
        &run,
        &[
            "training diverged in epoch 1",
            "try a smaller learning rate than --lr 1000000000",
            "nothing written",
        ],
    );
    assert!(!out.exists());
    // The same data at the default rate trains (the refusal is the rate's).
    let run = case.fit(&["--out", s(&out)]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn item_6_sizes_are_checked_before_anything_is_allocated() {
    let case = Case::new();
    // 60,000 filters of 26×26: 40 million floats an image, about 45 GiB for a batch of 128.
    let big = case.spec(
        "big.toml",
        &spec_text(&[
            "type = \"conv2d\"\nfilters = 60000\nkernel = 3\nactivation = \"relu\"",
            FLATTEN,
            SOFTMAX_10,
        ]),
    );
    let run = case.fit(&["--arch", s(&big), "--out", s(&case.path("m.bin"))]);
    refused_before_training(
        &run,
        &[
            "big.toml needs about 44.7 GiB to train",
            "more than --max-memory 8.0 GiB",
            "raise --max-memory",
        ],
    );
    // summary --arch says the same before anyone tries.
    let summary = trainer_ok(&["summary", "--arch", s(&big)]);
    assert!(
        stdout(&summary).contains(
            " Training memory (trainer fit, batches of 128): about 44.7 GiB, more than fit's \
             default --max-memory 8G: fit refuses it unless given more"
        ),
        "{}",
        stdout(&summary)
    );
    let run = case.fit(&[
        "--arch",
        s(&big),
        "--batch-size",
        "1",
        "--max-memory",
        "1G",
        "--out",
        s(&case.path("m.bin")),
    ]);
    refused_before_training(&run, &["needs about 6.4 GiB", "--max-memory 1.0 GiB"]);
    // The tutorial under a limit too small for it: the limit is what refuses it.
    let run = case.fit(&["--max-memory", "1M", "--out", s(&case.path("m.bin"))]);
    refused_before_training(&run, &["tutorial needs about", "--max-memory 1.0 MiB"]);

    // Pictures that declare 60000×60000 pixels in a few hundred bytes.
    let (model, _) = case.trained();
    let mut small_png = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut small_png, 1, 1);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0]).unwrap();
        writer.finish().unwrap();
    }
    // IHDR: length at 8, type at 12, width at 16, height at 20, CRC over 12..29 at 29.
    small_png[16..20].copy_from_slice(&60000u32.to_be_bytes());
    small_png[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&small_png[12..29]);
    small_png[29..33].copy_from_slice(&crc.to_be_bytes());
    let huge_png = case.path("huge.png");
    std::fs::write(&huge_png, &small_png).unwrap();
    let mut jpeg =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seven.jpg"))
            .unwrap();
    let sof = jpeg
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2))
        .expect("a frame header");
    // FFC0, length (2), precision (1), height (2), width (2).
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xea, 0x60, 0xea, 0x60]);
    let huge_jpeg = case.path("huge.jpg");
    std::fs::write(&huge_jpeg, &jpeg).unwrap();
    for (picture, kind) in [(&huge_png, "PNG"), (&huge_jpeg, "JPEG")] {
        let run = trainer(&["predict", "--model", s(&model), "--image", s(picture)]);
        assert_clean_failure(
            &run,
            &[
                &format!("the {kind} declares 60000×60000 pixels (3600 megapixels)"),
                "at most 64 megapixels",
            ],
        );
    }
}

/// The write end of a pipe whose reader has already gone: the stdin of a `true` that has
/// exited. (Closing a reader after the start would race with a fast command.)
fn closed_pipe() -> Stdio {
    let mut reader = std::process::Command::new("true")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let write_end = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    Stdio::from(write_end)
}

#[test]
fn item_7_a_closed_pipe_ends_every_subcommand_quietly() {
    let case = Case::new();
    let (model, float) = case.trained();
    let data = s(&case.data);
    let (m, f) = (s(&model), s(&float));
    let out = case.path("piped.bin");
    let report = case.path("piped-report");
    let commands: Vec<Vec<&str>> = vec![
        vec!["predict", "--model", m, "--data", data, "--index", "0"],
        vec![
            "predict", "--model", m, "--data", data, "--index", "0", "--json",
        ],
        vec!["eval", "--model", m, "--data", data],
        vec!["summary"],
        vec!["summary", "--model", m],
        vec![
            "fit",
            "--data",
            data,
            "--epochs",
            "1",
            "--train-limit",
            "40",
            "--out",
            s(&out),
        ],
        vec!["quantize", "--float", f, "--data", data, "--out", s(&out)],
        vec!["report", "--model", m, "--data", data, "--out", s(&report)],
        vec!["--help"],
    ];
    for args in commands {
        let run = trainer_command()
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .stdout(closed_pipe())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
        // 141 = 128 + SIGPIPE, a shell's status for `cat` in the same place.
        assert_eq!(run.status.code(), Some(141), "{args:?}");
    }
}

#[test]
fn item_11_argument_errors_are_in_the_users_words() {
    for (args, expected) in [
        (&["--epochs", "0"][..], "invalid value '0' for '--epochs <EPOCHS>': a whole number of at least 1"),
        (&["--epochs", "-2"], "invalid value '-2' for '--epochs <EPOCHS>': a whole number of at least 1, not a negative number"),
        (&["--lr", "-1"], "invalid value '-1' for '--lr <LR>': a positive number such as 0.001"),
        (&["--lr", "nan"], "invalid value 'nan' for '--lr <LR>': a positive number such as 0.001, not nan"),
        (&["--lr", "0"], "'--lr <LR>': a positive number such as 0.001 (it must be above 0)"),
        (&["--train-limit", "0"], "invalid value '0' for '--train-limit <N>': a whole number of at least 1"),
        (&["--calibration-images", "2.5"], "'--calibration-images <N>': a whole number of at least 1, not a fraction"),
        (&["--batch-size", "99999999999"], "'--batch-size <BATCH_SIZE>': too large: at most 4294967295"),
        (&["--l2", "-0.1"], "'--l2 <L2>': a number of at least 0 such as 0.0001, not a negative one"),
        (&["--seed", "-5"], "'--seed <SEED>': a whole number from 0, not a negative number"),
        (&["--max-memory", "lots"], "'--max-memory <SIZE>': a size in bytes such as 512M, 8G"),
    ] {
        let mut full = vec!["fit"];
        full.extend_from_slice(args);
        let run = trainer(&full);
        assert_clean_failure(&run, &[expected]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        for internal in ["learning_rate", "train_limit", "Some(", "unexpected argument", "4294967295 is not"] {
            if !expected.contains(internal) {
                assert!(!stderr.contains(internal), "{args:?}: {stderr}");
            }
        }
    }
    let run = trainer(&["quantize", "--float", "x.f32", "--calibration-images", "0"]);
    assert_clean_failure(
        &run,
        &["'--calibration-images <N>': a whole number of at least 1"],
    );
    let run = trainer(&["predict", "--index", "-1"]);
    assert_clean_failure(
        &run,
        &["'--index <N>': a whole number from 0, not a negative number"],
    );

    // Asking for more images than there are: done with all of them, and said.
    let case = Case::new();
    let out = case.path("m.bin");
    let float = case.path("m.f32");
    let run = trainer_ok(&[
        "fit",
        "--data",
        s(&case.data),
        "--epochs",
        "1",
        "--train-limit",
        "100000",
        "--calibration-images",
        "5000",
        "--out",
        s(&out),
        "--save-float",
        s(&float),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("note: --train-limit 100000 is more than the 120 training images of")
            && stderr.contains("training on all 120"),
        "{stderr}"
    );
    assert!(
        stderr.contains("note: --calibration-images 5000 is more than the 120 training images of")
            && stderr.contains("calibrating on all 120"),
        "{stderr}"
    );
    let run = trainer_ok(&[
        "quantize",
        "--float",
        s(&float),
        "--data",
        s(&case.data),
        "--calibration-images",
        "5000",
        "--out",
        s(&out),
    ]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("calibrating on all 120"));
}

#[test]
fn item_12_summary_of_a_model_that_does_not_fit_its_board_fails() {
    let case = Case::new();
    let (fits, _) = case.trained();
    // 784 × 1,500 int8 weights: more than the micro:bit's 256 KiB of flash.
    let wide = case.spec(
        "wide.toml",
        &spec_text(&[
            FLATTEN,
            "type = \"dense\"\nunits = 1500\nactivation = \"relu\"",
            SOFTMAX_10,
        ]),
    );
    let too_big = case.path("wide.bin");
    let run = case.fit(&["--arch", s(&wide), "--out", s(&too_big)]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for (what, args, fits) in [
        ("the tutorial's model.bin", vec!["--model", s(&fits)], true),
        ("a model.bin too large", vec!["--model", s(&too_big)], false),
        ("a spec too large", vec!["--arch", s(&wide)], false),
        ("the full tutorial", vec!["--arch", "tutorial-full"], false),
    ] {
        for json in [false, true] {
            let mut full = vec!["summary", "--board", "microbit"];
            full.extend(&args);
            if json {
                full.push("--json");
            }
            let run = trainer(&full);
            if fits {
                assert!(
                    run.status.success(),
                    "{what}: {}",
                    String::from_utf8_lossy(&run.stderr)
                );
                continue;
            }
            assert_clean_failure(&run, &["error: the model does not fit on microbit: flash "]);
            if json {
                let json: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
                assert_eq!(json["board"]["fits"], false, "{what}");
            } else {
                assert!(
                    stdout(&run).contains("This model does not fit on microbit."),
                    "{what}"
                );
            }
        }
    }
}
