//! The typed network of a model.bin, generated at build time: every shape a const
//! generic, every buffer sized at compile time. A firmware crate gets it with a few
//! lines of `build.rs` and one `include!`:
//!
//! ```no_run
//! // build.rs ([build-dependencies] model-spec): writes $OUT_DIR/network.rs
//! if let Err(error) = model_spec::codegen::build("model.bin", None) {
//!     panic!("{error}");
//! }
//! ```
//!
//! ```ignore
//! // src/main.rs ([dependencies] infer-core)
//! #[allow(dead_code)] // the generated module has more than most firmware uses
//! mod network {
//!     include!(concat!(env!("OUT_DIR"), "/network.rs"));
//! }
//! let net = network::Network::from_bytes(network::MODEL)?; // MODEL: the embedded model.bin
//! let mut input = [0; network::INPUT];
//! network::pixels_to_input(&pixels, &mut input); // pixels: &[u8; INPUT], H×W×C row-major
//! let logits = net.infer(&input, &mut network::Scratch::new());
//! ```
//!
//! The network is the model's own: its operations ([`StackFile`], model.bin format 3)
//! are grouped into fused stages by the one stage plan (`infer_core::stack::stages`) and
//! become typed layers (`infer_core::stack::layers`). Each general stage is compiled for the
//! facts the model fixes (`layers::Specialized`, `infer_core::stack::facts`, found by
//! `stages::facts_of` with this build's pixels at once, the logits and the prepared weights
//! added), and the one-channel 3×3 kernel for its fast requantization where the model has it:
//! only the code the network runs is linked.
//! A spec file (`models/*.toml`, or a preset), where given, is only checked against the
//! model: its int8 plan ([`Plan`], read with the trainer's own parser) must have exactly the
//! model's operations, or the build stops naming the operation and both shapes
//! ([`Declared::check_model`]). [`Ram`] estimates what the network needs for a board check
//! (`firmware-example/build/main.rs`, which uses [`Network`] directly for its own messages).
//!
//! The generated module holds `INPUT`, `CLASSES`, `OPS`, `LAYER_NAMES`, one type
//! alias `StageJ` per fused stage, the arena and patch sizes with compile-time
//! checks that the stages chain and agree with model-spec's RAM figures, `Scratch` (the working memory), `Network` (`from_bytes`, `infer`,
//! `infer_into`; `ProbedNetwork` the same telling a probe each layer: [`infer_core::probe`]), `pixels_to_input` and, from [`build`], `MODEL`.

use crate::plan::{wire_fields, OpShape, Plan, PlanOp};
use crate::spec::{Padding, Spec, PRESETS};
use infer_core::format::QuantParams;
use infer_core::kernels::dsp::{dense_wide_words_of, wide_words, widen_filter};
use infer_core::kernels::mve::row_offset_terms;
use infer_core::kernels::pairs::dense_pair_words_of;
use infer_core::kernels::words::word_weights_of;
use infer_core::stack::facts::{
    holds, known, Facts, ALL, FAST_POOL, FOUR, LOGITS, NONE, PREPARED_CONV, PREPARED_DENSE,
};
use infer_core::stack::format::input_offset;
use infer_core::stack::prepared::Preparation;
use infer_core::stack::stages::{
    depthwise_covered, facts_of, plan_file, shapes_of, Kernel, Parts, Pixels, Stage,
};
use infer_core::stack::Op;
use infer_core::stack::StackFile;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Stack the firmware needs while it classifies, besides the network's buffers,
/// patch and input: `main`'s and the digit loop's frames, the layer calls,
/// printing and the SysTick exception. Measured (`stack_peak_bytes` less
/// `scratch_bytes` and the input): 1.1 KiB on the Cortex-M4F, up to 1.8 KiB on the M0
/// (1,840 B for a six-operation stack with wide i32 logits). 256 B more since the
/// firmware's inference is the network's only caller and LLVM inlines its stages into one
/// frame (MLPerf Tiny keyword spotting's inference stack on the M55 1,980 -> 2,164 B, its
/// run 210 B over the estimate before), and 128 B more since a depthwise conv's set-up is
/// inlined into it (the same, 2,164 -> 2,280 B); `tests/tests/stack_firmware.rs` and
/// `tests/tests/imported_firmware.rs` check every run stays within the estimate.
pub const RUN_STACK: usize = 2304;

/// Stack each operation adds while the firmware classifies: its typed layer lives in
/// `main`'s frame (56–64 B on the Cortex-M for a conv, depthwise conv or dense layer, their
/// prepared weights' slice included) and the digit loop's frames grow with the stages.
/// Measured beside [`RUN_STACK`] (`stack_peak_bytes` less the buffers, input and logits):
/// MLPerf Tiny keyword spotting (eleven operations) peaks 3,422 B on the M55, visual wake
/// words (29) 5,752 B on the M3 (its inference alone 2,328 B of it), ResNet-8 (16) 3,588 B
/// on the M55, a fitted DS-CNN (seven) 696 B above `RUN_STACK` on the M4F.
/// The firmware's layer profile adds 24 B per operation: its ticks and probe calls in
/// `main`'s frame, and the probe's counts of the inference being profiled in statics
/// (`firmware-example/src/net.rs`). `tests/tests/stack_firmware.rs` and
/// `tests/tests/imported_firmware.rs` check every run.
pub const STACK_PER_OP: usize = 168;

/// Stack two stages run as one through a ring take besides [`RUN_STACK`]
/// (`stages::run_chain`'s frame and the first stage's calls nested in it, while the
/// second's run is live): measured up to 608 B on the M0 (a six-operation spec'd
/// network, `tests/tests/stack_firmware.rs`), 548 B for tutorial-full on the M55.
pub const CHAIN_STACK: usize = 768;

/// Stack decoding the model.bin takes (`net::load`: `StackFile::decode`, which
/// keeps the operations encoded and decodes one at a time, and each layer's
/// `from_file`), before the buffers exist, plus `main`'s frame and the reset
/// handler's (under 512 B), besides the typed network itself, which `load` builds in
/// its frame and returns into `main`'s ([`STACK_PER_OP`] per operation, as while it
/// classifies: [`Ram::load_stack`]). Measured `load_stack_bytes` on the M4F: 1,356–1,484 B
/// for the spec'd networks (`tests/tests/stack_firmware.rs`), 1,724 B for MLPerf Tiny
/// keyword spotting (eleven operations), 2,188 B for ResNet-8, 2,940 B for visual wake
/// words (29 operations; `tests/tests/imported_firmware.rs`). It was 812 B for two-blocks
/// before the operation enum grew the imported models' variants: serde's derived
/// decoding keeps a slot for each variant in `decode_op`'s frame and its callers'.
pub const LOAD_STACK: usize = 2560;

/// A spec, its int8 plan, and where it came from.
pub struct Declared {
    /// `FIRMWARE_SPEC` as given: how messages and the generated code name it.
    pub name: String,
    /// The spec file, unless a preset was named.
    pub path: Option<PathBuf>,
    /// The int8 operations the spec declares.
    pub plan: Plan,
}

impl Declared {
    /// Reads `FIRMWARE_SPEC` (`arg`): a preset name or a file, relative paths taken
    /// from `crate_dir`.
    ///
    /// # Errors
    /// An unreadable file, an invalid spec or one with no int8 plan, as a message.
    pub fn load(crate_dir: &Path, arg: &str) -> Result<Self, String> {
        let (parsed, path) = if PRESETS.iter().any(|(name, _)| *name == arg) {
            (Spec::load(arg), None)
        } else {
            let path = crate_dir.join(arg);
            let text = fs::read_to_string(&path).map_err(|error| {
                format!(
                    "FIRMWARE_SPEC={arg}: cannot read {} ({error}); give a spec file \
                     (models/*.toml) or a preset ({})",
                    path.display(),
                    PRESETS.map(|p| p.0).join(", ")
                )
            })?;
            (Spec::parse(&text), Some(path))
        };
        let spec = parsed.map_err(|error| format!("FIRMWARE_SPEC={arg}: {error:#}"))?;
        let plan = Plan::of(&spec).map_err(|error| format!("FIRMWARE_SPEC={arg}: {error:#}"))?;
        Ok(Self {
            name: arg.to_owned(),
            path,
            plan,
        })
    }

    /// Checks that `bytes` (the model called `model` in messages) is a format-3
    /// model of exactly this plan: input, and every operation's type, shapes and
    /// ReLU.
    ///
    /// # Errors
    /// The first difference, naming the operation and both descriptions.
    pub fn check_model(&self, model: &str, bytes: &[u8]) -> Result<(), String> {
        let spec = &self.name;
        let file = StackFile::decode(bytes)
            .map_err(|error| format!("{model} is not a format-3 model to run {spec}: {error}"))?;
        let input = (
            usize::from(file.input.height),
            usize::from(file.input.width),
            usize::from(file.input.channels),
        );
        if input != self.plan.input {
            return Err(format!(
                "{model} takes a {} input but {spec} declares {}",
                hwc(input),
                hwc(self.plan.input)
            ));
        }
        for (index, (op, planned)) in file.ops.iter().zip(&self.plan.ops).enumerate() {
            let found = op.shape();
            if found != planned.kind {
                return Err(format!(
                    "{model} operation {index} is {found} but {spec} declares {}",
                    planned.kind
                ));
            }
        }
        let (found, declared) = (file.ops.len(), self.plan.ops.len());
        if found != declared {
            let mut message = format!(
                "{model} has {found} operations but {spec} declares {declared} (the first \
                 {} agree)",
                found.min(declared)
            );
            for (index, op) in file.ops.iter().enumerate().skip(declared) {
                let _ = write!(message, "; {model} operation {index} is {}", op.shape());
            }
            for (index, op) in self.plan.ops.iter().enumerate().skip(found) {
                let _ = write!(message, "; {spec} operation {index} is {}", op.kind);
            }
            return Err(message);
        }
        Ok(())
    }
}

/// The network of a format-3 model.bin, to generate.
pub struct Network {
    /// How messages and the generated code name the model (e.g. `FIRMWARE_MODEL` as given).
    pub model: String,
    /// The spec the model was checked against, as given ([`Network::check_spec`]).
    pub spec: Option<String>,
    /// The model's operations in plan terms; with a spec, annotated with its layers.
    pub plan: Plan,
    /// The model's input quantization, for `pixels_to_input`.
    pub input_quant: QuantParams,
    /// The model file to embed as `MODEL` (absolute), if any.
    pub embed: Option<PathBuf>,
    /// Conv pixels the firmware's infer-core computes at once (its feature `small-ram`:
    /// one), which sizes the patch buffer.
    pub pixels: Pixels,
    /// Conv and dense weights prepared for the target's kernels
    /// ([`Network::prepare_weights`]): `(operation, words)`, emitted as `PREPARED`.
    pub prepared: Vec<(usize, Vec<u32>)>,
    /// What each stage of the plan may take as fixed at compile time
    /// (`infer_core::stack::stages::facts_of`; the pixels at once and whether the stage
    /// writes the logits are added when the code is generated).
    pub facts: Vec<Facts>,
    /// For each operation, whether it is a depthwise conv whose every channel goes through
    /// the four-channel kernels (`infer_core::kernels::depthwise::covered_by_quads`): its
    /// layer is compiled without the other ways.
    pub depthwise_covered: Vec<bool>,
}

impl Network {
    /// The network of `bytes` (the model called `model` in messages).
    ///
    /// # Errors
    /// Bytes that are not a valid format-3 model (a retired format's named, with the
    /// command that writes a current model).
    pub fn from_bytes(model: &str, bytes: &[u8]) -> Result<Self, String> {
        let file = StackFile::decode(bytes)
            .map_err(|error| format!("{model} is not a format-3 model: {error}"))?;
        Ok(Self {
            model: model.to_owned(),
            spec: None,
            plan: plan_of(&file),
            input_quant: file.input.quant,
            embed: None,
            pixels: Pixels::Four,
            prepared: Vec::new(),
            facts: plan_file(&file)
                .iter()
                .map(|stage| {
                    Parts::of(&file, stage).map_or(NONE, |p| facts_of(&p, Pixels::Four, false))
                })
                .collect(),
            depthwise_covered: (0..file.ops.len())
                .map(|index| depthwise_covered(&file, index))
                .collect(),
        })
    }

    /// Prepares the weights the target's kernels would otherwise unpack again and again
    /// (`infer_core::stack::prepared`), as `preparation` says, so that the generated code
    /// keeps them in flash beside the model (`bytes`, as given to [`Network::from_bytes`]) and
    /// loads the network with them. Widened for a DSP core: every conv that runs through the
    /// four-pixel kernel (all but a one-channel 3×3 conv fused with its pool;
    /// `infer_core::kernels::dsp::widen_filter`), and every dense layer of at least four
    /// units over a vector of whole sixteens of inputs, or streamed after a conv or pool
    /// whose positions each give it whole sixteens of values (but in the one-channel 3×3
    /// conv's own kernel; `infer_core::kernels::dsp::dense_wide_words_of`). Paired for the Cortex-M3: every
    /// dense layer over a vector of whole fours of inputs and at least four units
    /// (`infer_core::kernels::pairs::dense_pair_words_of`). Twice each such layer's weight
    /// bytes of flash, for about a tenth fewer instructions in a multi-channel conv and half
    /// in such a dense layer (a dense layer's rows followed by its offset terms, one word a
    /// unit). Offset terms alone for a Helium core: every dense layer but one in the
    /// one-channel 3×3 conv's own kernel, one word per unit
    /// (`infer_core::kernels::mve::row_offset_terms`), for about 40 % fewer instructions in it.
    /// Words for the Cortex-M0: every conv's whole quads of filters, a word per weight
    /// (`infer_core::kernels::words::word_weights_of`, four times the weight bytes), for
    /// about a third fewer instructions in all
    /// ([`crate::boards::Board::preparation`] says which boards take which).
    ///
    /// # Errors
    /// Bytes that are not a valid format-3 model.
    pub fn prepare_weights(
        &mut self,
        bytes: &[u8],
        preparation: Preparation,
    ) -> Result<(), String> {
        let file = StackFile::decode(bytes)
            .map_err(|error| format!("{} is not a format-3 model: {error}", self.model))?;
        let stages = plan_file(&file);
        // A one-channel 3×3 conv fused with its pool has a kernel of its own; a dense layer
        // after a conv or pool in its stage is streamed.
        let own_kernel = |index: usize| {
            stages
                .iter()
                .any(|st| st.first == index && st.kernel == Kernel::Stream3x3)
        };
        let over_vector = |index: usize| {
            stages
                .iter()
                .any(|st| st.first == index && st.dense && !st.conv && !st.pool)
        };
        // A dense layer streamed after a conv or pool (not in the one-channel 3×3 conv's
        // own kernel), each position giving it whole sixteens of values.
        let shapes = shapes_of(&file);
        let streamed_by_sixteens = |index: usize| {
            let channels = index
                .checked_sub(1)
                .and_then(|producer| shapes.get(producer))
                .map_or(0, |s| s.out_hwc().2);
            channels % 16 == 0
                && channels > 0
                && stages.iter().any(|st| {
                    st.kernel == Kernel::General
                        && st.dense
                        && (st.conv || st.pool)
                        && (st.first..st.first + st.ops()).contains(&index)
                })
        };
        // A dense layer in a stage of the one-channel 3×3 conv's own kernel.
        let in_own_kernel = |index: usize| {
            stages.iter().any(|st| {
                st.kernel == Kernel::Stream3x3 && (st.first..st.first + st.ops()).contains(&index)
            })
        };
        let widened = preparation == Preparation::Widened;
        self.prepared = file
            .ops
            .iter()
            .enumerate()
            .filter_map(|(index, op)| {
                let words: Vec<u32> = match op {
                    Op::Dense(d) if preparation == Preparation::OffsetTerms => {
                        if in_own_kernel(index) {
                            return None;
                        }
                        let offset = input_offset(&file, index);
                        row_offset_terms(d.params.weights, d.inputs as usize, offset).collect()
                    }
                    // The M0 takes its dense layers' int8 rows as they are.
                    Op::Dense(_) if preparation == Preparation::Words => return None,
                    Op::Dense(d) => {
                        let (inputs, units) = (d.inputs as usize, usize::from(d.units));
                        let whole = if widened { 16 } else { 4 };
                        let over = over_vector(index) && inputs % whole == 0;
                        if !(over || widened && streamed_by_sixteens(index)) || units < 4 {
                            return None;
                        }
                        if widened {
                            let offset = input_offset(&file, index);
                            dense_wide_words_of(d.params.weights, inputs, units, offset).collect()
                        } else {
                            dense_pair_words_of(d.params.weights, inputs, units).collect()
                        }
                    }
                    _ if preparation == Preparation::Words => {
                        let (c, g) = op.conv()?;
                        if g.filters < 4 || own_kernel(index) {
                            return None;
                        }
                        word_weights_of(c.params.weights, g.taps(), g.filters).collect()
                    }
                    _ => {
                        let (c, g) = op.conv()?;
                        if !widened || own_kernel(index) {
                            return None;
                        }
                        let mut words = vec![0; g.filters * wide_words(g.taps())];
                        widen_filter(c.params.weights, g.taps(), g.filters, &mut words)
                            .then_some(words)?
                    }
                };
                Some((index, words))
            })
            .collect();
        Ok(())
    }

    /// Flash bytes of the prepared weights ([`Network::prepare_weights`]).
    pub fn prepared_bytes(&self) -> usize {
        self.prepared.iter().map(|(_, w)| 4 * w.len()).sum()
    }

    /// Checks the model (`bytes`, as given to [`Network::from_bytes`]) against `declared`:
    /// the same input and operations. The generated code then names the spec and its
    /// layers.
    ///
    /// # Errors
    /// As [`Declared::check_model`].
    pub fn check_spec(&mut self, declared: &Declared, bytes: &[u8]) -> Result<(), String> {
        declared.check_model(&self.model, bytes)?;
        // Operation for operation the same kinds (checked): take the spec's layer indices.
        self.plan = declared.plan.clone();
        self.spec = Some(declared.name.clone());
        Ok(())
    }

    /// The RAM the network needs in a firmware like `firmware-example`.
    pub fn ram(&self) -> Ram {
        Ram::of(&self.plan, self.pixels)
    }

    /// The network's Rust code, to `include!` in a module.
    pub fn generate(&self) -> String {
        let prepared = !self.prepared.is_empty();
        // Add what depends on the build: the pixels at once, whether the stage writes the
        // logits, and which of its layers have prepared weights.
        let has_prepared = |op: usize| self.prepared.iter().any(|&(at, _)| at == op);
        let stages = self.plan.stages();
        let facts: Vec<Facts> = self
            .facts
            .iter()
            .zip(&stages)
            .enumerate()
            .map(|(j, (&f, st))| {
                let last = j + 1 == self.facts.len();
                let dense = st.last() - usize::from(st.add);
                [
                    (FOUR, self.pixels == Pixels::Four),
                    (LOGITS, last),
                    (PREPARED_CONV, st.conv && has_prepared(st.first)),
                    (PREPARED_DENSE, st.dense && has_prepared(dense)),
                ]
                .iter()
                .fold(f, |f, &(fact, holds)| known(f, fact, holds))
            })
            .collect();
        let mut out = generate(
            &self.model,
            self.spec.as_deref(),
            (&self.plan, &facts, &self.depthwise_covered),
            &self.ram(),
            prepared,
        );
        out.push_str(&prepared_code(&self.prepared));
        out.push_str(&input_code(self.plan.input, &self.input_quant));
        if let Some(path) = &self.embed {
            out.push_str(&model_code(path));
        }
        out
    }
}

/// For a firmware's `build.rs`: generates the typed network of the model.bin at `model`
/// into `$OUT_DIR/network.rs`, embedding the model as `MODEL` (and, for a Cortex-M4 or M7
/// target or a Cortex-M3's, its weights prepared beside it, [`Network::prepare_weights`]), and
/// tells cargo to rerun when the model or the spec changes. With `spec` (a spec file or a preset), the model
/// must have exactly its operations. Relative paths are taken from the crate's directory.
///
/// # Errors
/// An unreadable or invalid model, a spec that is unreadable, invalid or not the model's,
/// as a message naming the files (a build script shows it with `panic!`).
pub fn build(model: impl AsRef<Path>, spec: Option<&str>) -> Result<Network, String> {
    let crate_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .ok_or("CARGO_MANIFEST_DIR is not set: call codegen::build from a build script")?;
    let out_dir = env::var_os("OUT_DIR")
        .map(PathBuf::from)
        .ok_or("OUT_DIR is not set: call codegen::build from a build script")?;
    let path = crate_dir.join(model.as_ref());
    println!("cargo:rerun-if-changed={}", path.display());
    let bytes = fs::read(&path)
        .map_err(|error| format!("cannot read the model {} ({error})", path.display()))?;
    let mut network = Network::from_bytes(&model.as_ref().display().to_string(), &bytes)?;
    // A DSP core without Helium (Cortex-M4, M7) runs the convs and dense layers faster from
    // weights widened into flash beside the model, the Cortex-M3 its dense layers from
    // paired rows, the Cortex-M55 its dense layers from their offset terms
    // (`Network::prepare_weights`).
    let target = env::var("TARGET").unwrap_or_default();
    if let Some(preparation) = Preparation::for_target(&target) {
        network.prepare_weights(&bytes, preparation)?;
    }
    if let Some(spec) = spec {
        let declared = Declared::load(&crate_dir, spec)?;
        if let Some(path) = &declared.path {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        network.check_spec(&declared, &bytes)?;
    }
    network.embed = Some(
        fs::canonicalize(&path)
            .map_err(|error| format!("cannot resolve {} ({error})", path.display()))?,
    );
    let target = out_dir.join("network.rs");
    fs::write(&target, network.generate())
        .map_err(|error| format!("cannot write {} ({error})", target.display()))?;
    Ok(network)
}

/// The operations of a decoded model as a [`Plan`] (operation `i` as "layer" `i`, no
/// batch norm: a model.bin has them folded), which [`generate`] takes.
fn plan_of(file: &StackFile<'_>) -> Plan {
    Plan {
        input: (
            usize::from(file.input.height),
            usize::from(file.input.width),
            usize::from(file.input.channels),
        ),
        ops: file
            .ops
            .iter()
            .enumerate()
            .map(|(layer, op)| PlanOp {
                kind: op.shape(),
                layer,
                batchnorm: None,
            })
            .collect(),
    }
}

/// `pixels_to_input`: the input quantization of `p / 255` for every 8-bit `p`, as a
/// closed form when it is `p − 128` (the trainer's), else as a table.
fn input_code((h, w, c): (usize, usize, usize), quant: &QuantParams) -> String {
    let table: Vec<i8> = (0..=255u8).map(|p| quant.quantize_pixel(p)).collect();
    let offset = table
        .iter()
        .enumerate()
        .all(|(p, &q)| p as i32 - 128 == i32::from(q));
    let (table_item, convert) = if offset {
        (String::new(), "(pixel ^ 0x80) as i8")
    } else {
        let values: Vec<String> = table.iter().map(i8::to_string).collect();
        (
            format!(
                "\n/// The int8 input of each 8-bit value.\nconst PIXEL_TO_INPUT: [i8; 256] = [{}];\n",
                values.join(", ")
            ),
            "PIXEL_TO_INPUT[usize::from(pixel)]",
        )
    };
    format!(
        "{table_item}
/// Writes the network's int8 input for 8-bit values `pixels` ({h}×{w}×{c}, row-major,
/// channels last: the real input `p / 255`), quantized as the model's input (scale
/// {}, zero point {}).
pub fn pixels_to_input(pixels: &[u8; INPUT], input: &mut [i8; INPUT]) {{
    for (value, &pixel) in input.iter_mut().zip(pixels) {{
        *value = {convert};
    }}
}}
",
        quant.scale, quant.zero_point
    )
}

/// `MODEL`: the model.bin at `path`, embedded 4-byte aligned.
fn model_code(path: &Path) -> String {
    format!(
        "
/// Forces 4-byte alignment on the embedded model.
#[repr(C, align(4))]
struct Aligned<Bytes: ?Sized>(Bytes);

static ALIGNED: &Aligned<[u8]> = &Aligned(*include_bytes!({:?}));

/// The model.bin this network was generated from, 4-byte aligned, in flash.
pub static MODEL: &[u8] = &ALIGNED.0;
",
        path.display().to_string()
    )
}

/// `PREPARED`: the prepared conv and dense weights ([`Network::prepare_weights`]), in flash,
/// which `Network::from_bytes` hands to the model (`StackFile::prepare`).
fn prepared_code(prepared: &[(usize, Vec<u32>)]) -> String {
    // None prepared: no `PREPARED`, and `from_bytes` does not name it.
    if prepared.is_empty() {
        return String::new();
    }
    let mut code = String::new();
    let mut entries = String::new();
    for (op, words) in prepared {
        let list: Vec<String> = words.iter().map(|w| format!("{w:#x}")).collect();
        let _ = write!(
            code,
            "\n/// Operation {op}'s weights, prepared.\nstatic PREPARED_{op}: [u32; {}] = [{}];\n",
            words.len(),
            list.join(", ")
        );
        let _ = writeln!(
            entries,
            "    infer_core::stack::prepared::PreparedWeights {{ op: {op}, words: &PREPARED_{op} }},"
        );
    }
    format!(
        "{code}
/// The weights prepared for the core's kernels, checked against the model's
/// when it loads (`infer_core::stack::prepared`).
static PREPARED: [infer_core::stack::prepared::PreparedWeights<'static>; {}] = [
{entries}];
",
        prepared.len()
    )
}

/// `h×w×c`.
fn hwc((h, w, c): (usize, usize, usize)) -> String {
    format!("{h}×{w}×{c}")
}

/// The RAM one inference of a plan needs besides the program's own stack, in
/// bytes, as the generated code lays it out.
pub struct Ram {
    /// The arena of the activations (`stages::assign_buffers`): every stage's output but
    /// the last's (the logits), those live at once side by side.
    pub arena: usize,
    /// The stages' patch buffer (packed patch and working memory).
    pub patch: usize,
    /// Scratch a fused kernel keeps on its stack.
    pub kernel_stack: usize,
    /// The int8 input image.
    pub input: usize,
    /// The wide logits (`[i32; CLASSES]`, the caller's array that `infer_into` writes).
    pub logits: usize,
    /// [`CHAIN_STACK`] if two stages run as one, else 0.
    pub chain_stack: usize,
    /// [`STACK_PER_OP`] for each operation.
    pub layers_stack: usize,
}

impl Ram {
    /// The RAM of `plan` in a build computing `pixels` conv pixels at once.
    pub fn of(plan: &Plan, pixels: Pixels) -> Self {
        let chained = plan.stages().iter().any(|s| s.ring_in > 0);
        Self {
            arena: plan.arena(),
            patch: 4 * plan.patch_words(pixels),
            kernel_stack: plan.stack_bytes(),
            input: plan.input_len(),
            logits: 4 * plan.classes(),
            chain_stack: if chained { CHAIN_STACK } else { 0 },
            layers_stack: STACK_PER_OP * plan.ops.len(),
        }
    }

    /// Buffers, patch, kernel scratch, input and logits: what the network keeps while it
    /// classifies.
    pub fn network(&self) -> usize {
        self.arena + self.patch + self.kernel_stack + self.input + self.logits
    }

    /// The RAM the firmware needs for the network: the network and its stack
    /// ([`RUN_STACK`], [`STACK_PER_OP`] per operation, [`CHAIN_STACK`] if it chains)
    /// while it classifies, or its stack while it loads ([`Ram::load_stack`]), whichever
    /// is more.
    pub fn total(&self) -> usize {
        (self.network() + self.run_stack()).max(self.load_stack())
    }

    /// The stack while the model loads, before the buffers exist: [`LOAD_STACK`] and the
    /// typed network being built ([`STACK_PER_OP`] per operation).
    pub fn load_stack(&self) -> usize {
        LOAD_STACK + self.layers_stack
    }

    /// The stack while it classifies.
    fn run_stack(&self) -> usize {
        RUN_STACK + self.chain_stack + self.layers_stack
    }

    /// How [`Ram::total`] adds up, for messages.
    pub fn explain(&self) -> String {
        format!(
            "activation arena {}, patch {}, fused-kernel scratch {}, input {}, logits {} and {} \
             of stack while it classifies, at least {} while the model loads",
            self.arena,
            self.patch,
            self.kernel_stack,
            self.input,
            self.logits,
            self.run_stack(),
            self.load_stack()
        )
    }
}

/// The generated module: see the text it writes. `plan` is the model's (named `model`),
/// checked against `spec` if given.
fn generate(
    model: &str,
    spec: Option<&str>,
    (plan, facts, covered): (&Plan, &[Facts], &[bool]),
    ram: &Ram,
    prepared: bool,
) -> String {
    let ops = &plan.ops;
    let (h, w, c) = plan.input;
    let mut used = Imports::default();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };

    let checked = spec.map_or(String::new(), |spec| format!(", checked against {spec}"));
    line(&format!(
        "// Generated by model_spec::codegen from {model}{checked}; do not edit."
    ));
    line("// Each stage reads the input or the buffer its tensor is in and writes the buffer the");
    line("// plan gives it (a chain: stage j writes buffer j % 2); the last writes the logits.");
    line("// Every shape is a const generic, checked against the model.bin when it loads");
    line("// (`Network::from_bytes`) and by the build script before.");
    line("");
    let mut body = String::new();
    let mut item = |text: String| {
        body.push_str(&text);
        body.push('\n');
    };

    item(format!(
        "/// The spec the model was checked against, as given to the build.\npub const SPEC: Option<&str> = {spec:?};"
    ));
    item(format!(
        "/// Values in the input image ({h}×{w}×{c}).\npub const INPUT: usize = {};",
        plan.input_len()
    ));
    item(format!(
        "/// Classes: the last operation's outputs.\npub const CLASSES: usize = {};",
        plan.classes()
    ));
    item(format!(
        "/// Operations.\npub const OPS: usize = {};",
        ops.len()
    ));
    item(format!(
        "/// RAM the build script estimated for the network and the firmware's stack:\n/// {}.\npub const RAM_ESTIMATE: usize = {};",
        ram.explain(),
        ram.total()
    ));
    item(String::new());

    for (i, op) in ops.iter().enumerate() {
        let folded = op
            .batchnorm
            .map_or(String::new(), |b| format!(", batch norm {b} folded in"));
        let (lifetime, ty) = match op.kind {
            OpShape::Conv2d { geometry: g, relu } => {
                used.conv = true;
                let same = g.padding == Padding::Same;
                (
                    "<'a>",
                    format!(
                        "Conv2d<'a, {}, {}, {}, {}, {}, {}, {}, {same}, {relu}>",
                        g.in_h, g.in_w, g.in_c, g.k_h, g.k_w, g.filters, g.stride
                    ),
                )
            }
            OpShape::MaxPool2d {
                in_h,
                in_w,
                channels,
                pool,
            } => {
                used.pool = true;
                ("", format!("MaxPool2d<{in_h}, {in_w}, {channels}, {pool}>"))
            }
            OpShape::Dense {
                inputs,
                units,
                relu,
            } => {
                used.dense = true;
                ("<'a>", format!("Dense<'a, {inputs}, {units}, {relu}>"))
            }
            // Their const generics are the fields in model.bin's order, then the padding.
            OpShape::DepthwiseConv2d { geometry: g, .. } => {
                used.depthwise = true;
                let same = g.window.padding == Padding::Same;
                let fields = generic_list(&op.kind);
                let covered = covered.get(i).copied().unwrap_or(false);
                let ty = format!("DepthwiseConv2d<'a, {fields}, {same}, {covered}>");
                ("<'a>", ty)
            }
            OpShape::AvgPool2d { geometry: g, .. } => {
                used.avg_pool = true;
                let same = g.window.padding == Padding::Same;
                ("", format!("AvgPool2d<{}, {same}>", generic_list(&op.kind)))
            }
            OpShape::Add {
                h,
                w,
                channels,
                other,
                ..
            } => {
                used.add = true;
                ("", format!("Add<{h}, {w}, {channels}, {other}>"))
            }
            OpShape::Branch {
                h,
                w,
                channels,
                from,
            } => {
                used.branch = true;
                ("", format!("Branch<{h}, {w}, {channels}, {from}>"))
            }
        };
        item(format!(
            "/// Operation {i}: {}{}{folded}.\npub type Op{i}{lifetime} = {ty};",
            op.kind,
            spec.map_or(String::new(), |_| format!(" (spec layer {})", op.layer))
        ));
    }
    item(String::new());

    item("// Each operation reads what the one before writes, or the tensor it names.".into());
    let shapes: Vec<OpShape> = ops.iter().map(|op| op.kind).collect();
    let op_reads: Vec<Vec<usize>> = shapes
        .iter()
        .enumerate()
        .map(|(i, shape)| tensors_read(i, shape))
        .collect();
    for check in chain_checks("Op", "operation", &op_reads, |t| t.checked_sub(1)) {
        item(check);
    }
    item(String::new());

    // The stages infer-core's plan groups the operations into (the same plan as
    // `stack::run` and the RAM estimate).
    let stages = plan.stages();
    let last_stage = stages.len().saturating_sub(1);
    let mut layer_names = vec![String::from("\"\""); ops.len()];
    for (ops, name) in plan.layer_names() {
        if let Some(slot) = layer_names.get_mut(ops.start) {
            *slot = format!("\"{name}\"");
        }
    }
    item(format!(
        "/// Each operation's name in the `layers:` line, where the probe ([`infer_core::probe`])\n/// is told it: a layer's (`<type>_<index>`, a conv's max pool with it as\n/// `conv2d_<i>+maxpool2d_<i+1>`); empty for an operation timed with the one before.\npub const LAYER_NAMES: [&str; OPS] = [{}];",
        layer_names.join(", ")
    ));
    // The stages that tell the network's probe which operation they compute: those
    // compiled for their facts, and the one-channel 3×3 kernel.
    let probed: Vec<bool> = stages
        .iter()
        .enumerate()
        .map(|(j, st)| match st.kernel {
            Kernel::General => !st.alone && facts.get(j).is_some_and(|&f| f != NONE),
            Kernel::Stream3x3 => true,
        })
        .collect();
    for (j, st) in stages.iter().enumerate() {
        let f = facts.get(j).copied().unwrap_or(NONE);
        // The one-channel 3×3 kernel's requantization, where it is the fast one: the exact
        // one is left out.
        let fast = holds(f, FAST_POOL, || false);
        let (lifetime, ty) = stage_type(st, ops, fast, &mut used);
        let (ty, known_facts) = if probed[j] && st.kernel == Kernel::General {
            used.specialized = true;
            let holding: Vec<&str> = ALL
                .iter()
                .filter(|&&(_, fact)| holds(f, fact, || false))
                .map(|&(name, _)| name)
                .collect();
            (
                format!("Specialized<{ty}, {f:#018x}, P>"),
                format!(
                    "\n/// Compiled for its facts (`infer_core::stack::facts`): {}.",
                    holding.join(", ")
                ),
            )
        } else {
            (ty, String::new())
        };
        // Over its own input: the two tensors share a region of the arena.
        let (ty, known_facts) = if st.over_input {
            used.in_place = true;
            let words = st.over_input_words(&shapes);
            (
                format!("InPlace<{ty}, {words}>"),
                format!("{known_facts}\n/// Computed over its input, which dies there."),
            )
        } else {
            (ty, known_facts)
        };
        item(format!(
            "/// Stage {j}: operations {}..={} ({:?} kernel).{known_facts}\npub type Stage{j}{} = {ty};",
            st.first,
            st.last(),
            st.kernel,
            generics(lifetime, probed[j], true),
        ));
    }
    // The stage that writes tensor `t` (the output of operation `t − 1`, the last of a
    // stage: the plan fuses past no tensor an add or a branch names).
    let writer = |t: usize| {
        t.checked_sub(1)
            .and_then(|op| stages.iter().position(|st| st.last() == op))
    };
    let stage_reads: Vec<Vec<usize>> = stages
        .iter()
        .map(|st| tensors_read(st.first, &shapes[st.first]))
        .collect();
    for check in chain_checks("Stage", "stage", &stage_reads, writer) {
        item(check);
    }
    // Stages run as one: the first writes its rows into a ring, the second reads them.
    let chained = |j: usize| stages.get(j + 1).is_some_and(|next| next.ring_in > 0);
    for (j, st) in stages.iter().enumerate().filter(|&(j, _)| chained(j)) {
        used.chain = true;
        let next = j + 1;
        let ring = stages[next].ring_in;
        item(format!(
            "/// Stages {j} and {next} run as one, stage {next} reading stage {j}'s map through a ring of\n/// {ring} rows.\npub type Chain{j}{} = Chain<Stage{j}{}, Stage{next}{}, {ring}>;",
            generics("<'a>", probed[j] || probed[next], true),
            generics(stage_lifetime(st, ops), probed[j], false),
            generics(stage_lifetime(&stages[next], ops), probed[next], false)
        ));
    }
    item(String::new());

    // The arena of the one plan (`stages::assign_buffers`): every tensor at its offset.
    let buffer_plan = plan.buffer_plan();
    item(format!(
        "/// Bytes of the arena the tensors are kept in (those live at once never overlap).\npub const ARENA: usize = {};",
        buffer_plan.arena
    ));
    // Where tensor `t` of `len` values is (`None`: the input).
    let region = |t: usize, len: usize| {
        buffer_plan
            .region(t, len)
            .map(|r| format!("{}..{}", r.start, r.end))
    };
    // Each stage's output fits its region.
    for (j, st) in stages.iter().enumerate().filter(|&(j, _)| j != last_stage) {
        let out = if chained(j) {
            let rows = shapes[st.last()].out_hwc().0;
            format!("<Chain{j}>::ring_bytes({rows})")
        } else {
            format!("<Stage{j} as Layer>::OUT")
        };
        if let Some(r) = buffer_plan.region(st.last() + 1, st.out_len(&shapes)) {
            item(format!(
                "const _: () = assert!({out} <= {} && {} <= ARENA, \"stage {j}'s output fits its place in the arena\");",
                r.len(),
                r.end
            ));
        }
    }
    let patches: Vec<String> = (0..stages.len())
        .filter(|&j| !chained(j))
        .map(|j| {
            if stages[j].ring_in > 0 {
                format!("<Chain{}>::PATCH_WORDS", j - 1)
            } else {
                format!("<Stage{j} as Layer>::PATCH_WORDS")
            }
        })
        .collect();
    let patch = max_of(&patches, &mut used);
    item(format!(
        "/// Words of the patch buffer (packed patch and working memory): the largest stage's.\npub const PATCH_WORDS: usize = {patch};"
    ));
    // The build's RAM check used model-spec's figures: they must be these.
    let mut agree = vec![
        format!("PATCH_WORDS * 4 == {}", ram.patch),
        format!("ARENA == {}", ram.arena),
    ];
    let stream_stack: Vec<String> = stages
        .iter()
        .enumerate()
        .filter(|(_, st)| st.kernel == Kernel::Stream3x3)
        .map(|(j, _)| format!("<Stage{j}>::STACK_BYTES"))
        .collect();
    if !stream_stack.is_empty() {
        agree.push(format!(
            "{} == {}",
            max_of(&stream_stack, &mut used),
            ram.kernel_stack
        ));
    }
    item(format!(
        "const _: () = assert!({}, \"the RAM estimate (model-spec's Plan) differs from the layers' sizes\");",
        agree.join(" && ")
    ));
    item(String::new());

    // A network of one stage keeps nothing in the arena.
    let uses_arena = buffer_plan.arena > 0;
    let (field, zero) = if uses_arena {
        (
            "\n    arena: [i8; ARENA],",
            "\n            arena: [0; ARENA],",
        )
    } else {
        ("", "")
    };
    item(format!(
        "/// The working memory of one inference: the arena of the tensors and the patch.
pub struct Scratch {{{field}
    patch: [u32; PATCH_WORDS],
}}

impl Scratch {{
    /// Zeroed buffers.
    pub const fn new() -> Self {{
        Self {{{zero}
            patch: [0; PATCH_WORDS],
        }}
    }}
}}

impl Default for Scratch {{
    fn default() -> Self {{
        Self::new()
    }}
}}
"
    ));

    let fields: String = stages
        .iter()
        .enumerate()
        .filter(|&(j, _)| stages[j].ring_in == 0)
        .map(|(j, st)| {
            if chained(j) {
                let p = probed[j] || probed[j + 1];
                format!("    chain{j}: Chain{j}{},\n", generics("<'a>", p, false))
            } else {
                format!(
                    "    stage{j}: Stage{j}{},\n",
                    generics(stage_lifetime(st, ops), probed[j], false)
                )
            }
        })
        .collect();
    item(format!(
        "/// The network of {model}, its weights borrowed from the model bytes, telling the
/// probe `P` each operation it computes ([`infer_core::probe`]).
pub struct ProbedNetwork<'a, P> {{
{fields}    probe: PhantomData<P>,
}}

/// The network, with no probe.
pub type Network<'a> = ProbedNetwork<'a, NoProbe>;
"
    ));

    let loads: String = stages
        .iter()
        .enumerate()
        .filter(|&(j, _)| stages[j].ring_in == 0)
        .map(|(j, st)| {
            let (field, ty) = if chained(j) {
                ("chain", "Chain")
            } else {
                ("stage", "Stage")
            };
            format!(
                "            {field}{j}: {ty}{j}::from_file(file, {})?,\n",
                st.first
            )
        })
        .collect();
    let mut runs = String::new();
    // A stage over its own input binds its region (`stages::regions`).
    let mut over_regions = false;
    // Binds `dst` to the region of tensor `out` (`out_len` values; none: the logits) and
    // `src`, … to the regions of `reads` (the input's name where a tensor is the input).
    let mut bind = |runs: &mut String, out: Option<(usize, usize)>, reads: &[(usize, usize)]| {
        let write = out.and_then(|(t, len)| region(t, len));
        let names = ["src", "other"];
        let from_input = reads.iter().all(|&(t, len)| region(t, len).is_none());
        if write.is_none() && from_input {
            // It reads the input and writes the logits: nothing in the arena.
            return vec!["input"; reads.len()];
        }
        let dst = if write.is_some() { "dst" } else { "_" };
        let write = write.unwrap_or_else(|| "0..0".into());
        let regions: Vec<String> = reads
            .iter()
            .map(|&(t, len)| region(t, len).map_or("None".into(), |r| format!("Some({r})")))
            .collect();
        used.regions = true;
        // A tensor that is the input is not in the arena: its name goes unbound.
        let bound: Vec<&str> = reads
            .iter()
            .zip(names)
            .map(|(&(t, len), name)| if region(t, len).is_some() { name } else { "_" })
            .collect();
        let _ = writeln!(
            runs,
            "        let ({dst}, [{}]) = regions(arena, {write}, [{}]);",
            bound.join(", "),
            regions.join(", ")
        );
        reads
            .iter()
            .zip(names)
            .map(|(&(t, len), name)| {
                if region(t, len).is_some() {
                    name
                } else {
                    "input"
                }
            })
            .collect::<Vec<_>>()
    };
    for (j, st) in stages.iter().enumerate() {
        if chained(j) {
            // The next stage's run computes this one too, writing its rows into its ring.
            continue;
        }
        // The probe is told the stage's first operation (of a chain, the first stage's).
        let entered = if st.ring_in > 0 {
            stages[j - 1].first
        } else {
            st.first
        };
        let _ = writeln!(runs, "        P::enter({entered});");
        let last = j == last_stage;
        let out_len = shapes[st.last()].out_len();
        let out = (!last).then_some((st.last() + 1, out_len));
        if st.ring_in > 0 {
            let producer = &stages[j - 1];
            let ring = region(st.first, producer.out_len(&shapes)).unwrap_or_else(|| "0..0".into());
            let dst = out
                .and_then(|(t, len)| region(t, len))
                .unwrap_or_else(|| "0..0".into());
            used.regions_mut = true;
            let name = if last { "_" } else { "dst" };
            let _ = writeln!(
                runs,
                "        let (ring, {name}) = regions_mut(arena, {ring}, {dst});"
            );
            let out = if last {
                used.chain_logits = true;
                "Out::Logits(&mut logits[..])".to_string()
            } else {
                used.chain_values = true;
                "Out::Values(MapRows::whole_mut(dst))".to_string()
            };
            let _ = writeln!(
                runs,
                "        self.chain{}.run(input, ring, patch, {out});",
                j - 1
            );
        } else {
            let in_len = shapes[st.first].in_len();
            match shapes[st.first] {
                // Its tensor stays where it is: the next stage reads it there.
                OpShape::Branch { from, .. } => {
                    let _ = writeln!(
                        runs,
                        "        // Stage {j}: a branch to tensor {from}.\n        let _ = &self.stage{j};"
                    );
                }
                OpShape::Add { other, .. } => {
                    let names = bind(&mut runs, out, &[(st.first, in_len), (other, in_len)]);
                    let _ = writeln!(
                        runs,
                        "        self.stage{j}.run_add({}, {}, patch, dst);",
                        names[0], names[1]
                    );
                }
                _ if st.over_input && !last => {
                    let len = in_len.max(out_len);
                    let map = region(st.first, len).unwrap_or_else(|| "0..0".into());
                    over_regions = true;
                    let _ = writeln!(runs, "        let (map, []) = regions(arena, {map}, []);");
                    let _ = writeln!(runs, "        self.stage{j}.run_in_place(map, patch);");
                }
                _ => {
                    let names = bind(&mut runs, out, &[(st.first, in_len)]);
                    if last {
                        let _ = writeln!(
                            runs,
                            "        self.stage{j}.run_logits({}, patch, &mut logits[..]);",
                            names[0]
                        );
                    } else {
                        let _ =
                            writeln!(runs, "        self.stage{j}.run({}, patch, dst);", names[0]);
                    }
                }
            }
        }
    }
    let _ = writeln!(runs, "        P::enter(OPS);");
    used.regions |= over_regions;
    let from_bytes_body = if prepared {
        "let mut file = StackFile::decode(bytes)?;
        file.prepare(&PREPARED);
        Self::from_file(&file)"
    } else {
        "Self::from_file(&StackFile::decode(bytes)?)"
    };
    let arena = if uses_arena { "arena, " } else { "" };
    item(format!(
        "impl<'a, P: Probe> ProbedNetwork<'a, P> {{
    /// Decodes a format-3 model and checks every operation against this network's types.
    ///
    /// # Errors
    /// A malformed model, or one of another network: the operation and property named.
    #[inline(never)]
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {{
        // Decoding (out of line) and building the stages are two sibling calls, so that
        // the stack of the one is free again before the other's frame exists.
        {from_bytes_body}
    }}

    /// Checks every operation of a decoded model against this network's types and
    /// borrows its weights.
    ///
    /// # Errors
    /// A model of another network: the operation and property named.
    #[inline(never)]
    pub fn from_file(file: &StackFile<'a>) -> Result<Self, Error> {{
        check_op_count(file, OPS)?;
        Ok(Self {{
{loads}            probe: PhantomData,
        }})
    }}

    /// The wide logits of `input` (int32 accumulators requantized to one common scale,
    /// zero point 0, not clipped to int8).
    #[inline(always)]
    #[allow(dead_code)] // a firmware may take them in place instead (`infer_into`)
    pub fn infer(&self, input: &[i8; INPUT], scratch: &mut Scratch) -> [i32; CLASSES] {{
        let mut logits = [0; CLASSES];
        self.infer_into(input, scratch, &mut logits);
        logits
    }}

    /// [`Self::infer`] into the caller's `logits` (no copy of them: for many classes,
    /// the caller's array is the only one). Tells `P` each operation it computes, and
    /// `OPS` at the end.
    #[inline(always)]
    pub fn infer_into(&self, input: &[i8; INPUT], scratch: &mut Scratch, logits: &mut [i32; CLASSES]) {{
        let Scratch {{ {arena}patch }} = scratch;
{runs}    }}
}}"
    ));

    let mut layers = vec!["check_op_count"];
    if used.add_in_place {
        layers.push("AddInPlace");
    }
    if used.chain {
        layers.push("Chain");
    }
    if used.max {
        layers.push("max");
    }
    if used.add {
        layers.push("Add");
    }
    if used.avg_pool {
        layers.push("AvgPool2d");
    }
    if used.branch {
        layers.push("Branch");
    }
    if used.conv {
        layers.push("Conv2d");
    }
    if used.conv_pool {
        layers.push("ConvPool");
    }
    if used.stream3x3_map {
        layers.push("ConvPool3x3");
    }
    if used.stream3x3 {
        layers.push("ConvPoolDense3x3");
    }
    if used.dense {
        layers.push("Dense");
    }
    if used.depthwise {
        layers.push("DepthwiseConv2d");
    }
    if used.in_place {
        layers.push("InPlace");
    }
    layers.push("Layer");
    if !used.chain_logits {
        layers.push("Logits");
    }
    if used.pool {
        layers.push("MaxPool2d");
    }
    if used.specialized {
        layers.push("Specialized");
    }
    if used.streamed {
        layers.push("Streamed");
    }
    line(&format!(
        "use infer_core::stack::layers::{{{}}};",
        layers.join(", ")
    ));
    if used.chain_values {
        line("use infer_core::kernels::MapRows;");
    }
    let stage_items: Vec<&str> = [
        (used.chain, "Out"),
        (used.regions, "regions"),
        (used.regions_mut, "regions_mut"),
    ]
    .iter()
    .filter(|&&(u, _)| u)
    .map(|&(_, name)| name)
    .collect();
    if !stage_items.is_empty() {
        line(&format!(
            "use infer_core::stack::stages::{{{}}};",
            stage_items.join(", ")
        ));
    }
    line("use infer_core::stack::StackFile;");
    line("use infer_core::probe::{NoProbe, Probe};");
    line("use infer_core::Error;");
    line("use core::marker::PhantomData;");
    line("");
    out.push_str(&body);
    out
}

/// The tensors operation `index` of shape `shape` reads (0 the input, `k + 1` the output of
/// operation `k`): the previous output, a branch's tensor instead, an add's other too.
fn tensors_read(index: usize, shape: &OpShape) -> Vec<usize> {
    match *shape {
        OpShape::Branch { from, .. } => vec![from],
        OpShape::Add { other, .. } => vec![index, other],
        _ => vec![index],
    }
}

/// The `const` assertions that the layers named `{alias}0`, `{alias}1`, … chain: layer `i`
/// reads the tensors `reads[i]`, each written by layer `writer(t)` (none: the input), the
/// last writes the logits.
fn chain_checks(
    alias: &str,
    what: &str,
    reads: &[Vec<usize>],
    writer: impl Fn(usize) -> Option<usize>,
) -> Vec<String> {
    let check = |condition: String, message: String| {
        format!("const _: () = assert!(\n    {condition},\n    \"{message}\"\n);")
    };
    let last = reads.len().saturating_sub(1);
    let mut checks = Vec::new();
    for (i, tensors) in reads.iter().enumerate() {
        for &t in tensors {
            checks.push(match writer(t) {
                None => check(
                    format!("<{alias}{i} as Layer>::IN == INPUT"),
                    format!("{what} {i} reads the input"),
                ),
                Some(p) => check(
                    format!("<{alias}{p} as Layer>::OUT == <{alias}{i} as Layer>::IN"),
                    format!("{what} {p} writes what {what} {i} reads"),
                ),
            });
        }
    }
    checks.push(check(
        format!("<{alias}{last} as Layer>::OUT == CLASSES"),
        format!("{what} {last} writes the logits"),
    ));
    checks
}

/// Which of the optional names the generated code uses.
#[derive(Default)]
struct Imports {
    add: bool,
    branch: bool,
    avg_pool: bool,
    conv: bool,
    depthwise: bool,
    pool: bool,
    dense: bool,
    max: bool,
    conv_pool: bool,
    streamed: bool,
    stream3x3: bool,
    stream3x3_map: bool,
    chain: bool,
    /// A chain writes values (needs `MapRows`).
    chain_values: bool,
    /// The last step is a chain (the `Logits` trait goes unused).
    chain_logits: bool,
    /// A stage with an add in place.
    add_in_place: bool,
    /// A stage compiled for its facts.
    specialized: bool,
    /// A stage over its own input.
    in_place: bool,
    /// `stages::regions`.
    regions: bool,
    /// `stages::regions_mut` (a chain's ring and output).
    regions_mut: bool,
}

/// `kind`'s fields as model.bin writes them ([`wire_fields`]), comma-separated.
fn generic_list(kind: &OpShape) -> String {
    let fields: Vec<String> = wire_fields(kind).iter().map(usize::to_string).collect();
    fields.join(", ")
}

/// Whether the typed layer of `kind` borrows weights (a pool borrows nothing).
fn borrows(kind: &OpShape) -> bool {
    !matches!(
        kind,
        OpShape::MaxPool2d { .. }
            | OpShape::AvgPool2d { .. }
            | OpShape::Add { .. }
            | OpShape::Branch { .. }
    )
}

/// The generic parameters of a stage's or chain's alias, `lifetime` (`"<'a>"` or `""`) and,
/// if `probed`, the probe `P` (`P = NoProbe` where the alias is `declared`).
fn generics(lifetime: &str, probed: bool, declared: bool) -> String {
    let mut params = Vec::new();
    if !lifetime.is_empty() {
        params.push("'a");
    }
    if probed {
        params.push(if declared { "P = NoProbe" } else { "P" });
    }
    if params.is_empty() {
        String::new()
    } else {
        format!("<{}>", params.join(", "))
    }
}

/// `<'a>` unless the stage is a pool alone (which borrows nothing).
fn stage_lifetime(stage: &Stage, ops: &[crate::plan::PlanOp]) -> &'static str {
    let pool_alone = stage.pool && !stage.conv && !stage.dense;
    let avg_pool_alone = stage.alone && ops.get(stage.first).is_some_and(|op| !borrows(&op.kind));
    if pool_alone || avg_pool_alone {
        ""
    } else {
        "<'a>"
    }
}

/// The generic lifetime and the type of stage `stage` of `ops`, in terms of the
/// `Op{i}` aliases.
fn stage_type(
    stage: &Stage,
    ops: &[crate::plan::PlanOp],
    fast: bool,
    used: &mut Imports,
) -> (&'static str, String) {
    let op = |i: usize| {
        if borrows(&ops[i].kind) {
            format!("Op{i}<'a>")
        } else {
            format!("Op{i}")
        }
    };
    let first = stage.first;
    if stage.kernel == Kernel::Stream3x3 {
        if let OpShape::Conv2d { geometry: g, relu } = ops[first].kind {
            let (in_h, in_w, filters) = (g.in_h, g.in_w, g.filters);
            match ops.get(first + 2).map(|op| op.kind) {
                Some(OpShape::Dense {
                    units,
                    relu: dense_relu,
                    ..
                }) if stage.dense => {
                    used.stream3x3 = true;
                    return (
                        "<'a>",
                        format!(
                            "ConvPoolDense3x3<'a, {in_h}, {in_w}, {filters}, {units}, {relu}, {dense_relu}, {fast}, P>"
                        ),
                    );
                }
                _ if !stage.dense => {
                    used.stream3x3_map = true;
                    return (
                        "<'a>",
                        format!("ConvPool3x3<'a, {in_h}, {in_w}, {filters}, {relu}, {fast}, P>"),
                    );
                }
                _ => {}
            }
        }
    }
    let mut at = first;
    let mut producer = None;
    if stage.conv {
        producer = Some(op(at));
        at += 1;
    }
    if stage.pool {
        producer = Some(match producer {
            Some(conv) => {
                used.conv_pool = true;
                format!("ConvPool<{conv}, {}>", op(at))
            }
            None => op(at),
        });
        at += 1;
    }
    let dense_at = at;
    let ty = match (producer, stage.dense) {
        (Some(p), true) => {
            let OpShape::Dense {
                inputs,
                units,
                relu,
            } = ops[dense_at].kind
            else {
                unreachable!("the stage ends with a dense layer");
            };
            used.streamed = true;
            format!("Streamed<'a, {p}, {inputs}, {units}, {relu}>")
        }
        (Some(p), false) => p,
        (None, _) => op(at),
    };
    let ty = if stage.add {
        // The add after it, computed in place.
        used.add = true;
        used.add_in_place = true;
        format!("AddInPlace<{ty}, {}>", op(stage.last()))
    } else {
        ty
    };
    (stage_lifetime(stage, ops), ty)
}

/// `max(max(a, b), c)`…, `0` for no terms.
fn max_of(terms: &[String], used: &mut Imports) -> String {
    let mut terms = terms.iter();
    let Some(first) = terms.next() else {
        return "0".into();
    };
    terms.fold(first.clone(), |acc, t| {
        used.max = true;
        format!("max({acc}, {t})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The committed two-blocks model (format 3).
    const TWO_BLOCKS: &[u8] = include_bytes!("../../firmware-example/assets/two-blocks.bin");

    #[test]
    fn the_network_is_the_models_own_and_a_spec_only_checks_it() {
        let network = Network::from_bytes("two-blocks.bin", TWO_BLOCKS).unwrap();
        let spec = Declared::load(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "../models/two-blocks.toml",
        )
        .unwrap();
        let kinds = |plan: &Plan| plan.ops.iter().map(|op| op.kind).collect::<Vec<_>>();
        assert_eq!(kinds(&network.plan), kinds(&spec.plan));
        assert_eq!(network.plan.input, (28, 28, 1));
        let code = network.generate();
        assert!(
            code.contains("pub const SPEC: Option<&str> = None;"),
            "{code}"
        );
        assert!(
            code.contains("pub type Op0<'a> = Conv2d<'a, 28, 28, 1, 3, 3, 16, 1, false, true>;"),
            "{code}"
        );
        assert!(
            code.contains("pub type Op4<'a> = Dense<'a, 800, 10, false>;"),
            "{code}"
        );
        // The trainer's input quantization (1/255, −128) is `p − 128`, no table.
        assert!(code.contains("*value = (pixel ^ 0x80) as i8;"), "{code}");
        assert!(!code.contains("PIXEL_TO_INPUT"));
        assert!(
            !code.contains("pub static MODEL"),
            "only codegen::build embeds"
        );

        let mut checked = Network::from_bytes("two-blocks.bin", TWO_BLOCKS).unwrap();
        checked.check_spec(&spec, TWO_BLOCKS).unwrap();
        let code = checked.generate();
        assert!(
            code.contains("pub const SPEC: Option<&str> = Some(\"../models/two-blocks.toml\");")
        );
        assert!(
            code.contains("(spec layer 2), batch norm 3 folded in."),
            "{code}"
        );
        // The same network: only comments and `SPEC` differ.
        let types = |code: &str| {
            code.lines()
                .filter(|l| !l.starts_with("//") && !l.contains("SPEC"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(types(&code), types(&network.generate()));
    }

    #[test]
    fn widened_weights_are_generated_beside_the_model_only_when_asked() {
        let mut network = Network::from_bytes("two-blocks.bin", TWO_BLOCKS).unwrap();
        let code = network.generate();
        assert!(!code.contains("PREPARED"), "{code}");
        // The Cortex-M3 pairs only the dense layers over a vector: two-blocks has none.
        network
            .prepare_weights(TWO_BLOCKS, Preparation::Paired)
            .unwrap();
        assert!(network.prepared.is_empty());
        assert!(code.contains("Self::from_file(&StackFile::decode(bytes)?)"));
        network
            .prepare_weights(TWO_BLOCKS, Preparation::Widened)
            .unwrap();
        // The second conv (op 2), as the model's own weights widened, and the dense layer
        // after it and its pool (op 4: 32 values a position), as its rows widened and its
        // offset terms; the first conv, one channel 3×3 with its pool, has a kernel of its
        // own.
        let file = StackFile::decode(TWO_BLOCKS).unwrap();
        let ops: Vec<usize> = network.prepared.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, [2, 4]);
        for (op, words) in &network.prepared {
            if let Some(Op::Dense(d)) = file.ops.get(*op) {
                let (inputs, units) = (d.inputs as usize, usize::from(d.units));
                let offset = input_offset(&file, *op);
                let rows: Vec<u32> =
                    dense_wide_words_of(d.params.weights, inputs, units, offset).collect();
                assert_eq!(words, &rows);
                continue;
            }
            let (c, g) = file
                .ops
                .get(*op)
                .unwrap()
                .conv()
                .map(|(c, g)| (*c, g))
                .unwrap();
            assert!(infer_core::kernels::dsp::is_widened(
                c.params.weights,
                g.taps(),
                g.filters,
                words
            ));
        }
        assert_eq!(
            network.prepared_bytes(),
            network
                .prepared
                .iter()
                .map(|(_, w)| 4 * w.len())
                .sum::<usize>()
        );
        let code = network.generate();
        assert!(code.contains("static PREPARED_2: [u32; "), "{code}");
        assert!(code.contains("file.prepare(&PREPARED);"), "{code}");
        assert!(
            code.contains("PreparedWeights { op: 2, words: &PREPARED_2 },"),
            "{code}"
        );
    }

    #[test]
    fn a_spec_of_another_network_or_a_retired_format_is_refused_naming_both() {
        let other = Declared {
            name: "tutorial".into(),
            path: None,
            plan: Plan::of(&Spec::load("tutorial").unwrap()).unwrap(),
        };
        let mut network = Network::from_bytes("two-blocks.bin", TWO_BLOCKS).unwrap();
        let error = network.check_spec(&other, TWO_BLOCKS).unwrap_err();
        assert!(
            error.starts_with("two-blocks.bin operation 0 is conv2d 3×3 stride 1 valid relu, 28×28×1 → 26×26×16 but tutorial declares conv2d 3×3 stride 1 valid relu, 28×28×1 → 26×26×32"),
            "{error}"
        );
        assert_eq!(network.spec, None);
        // The same bytes marked format 1 (CRC fixed up): a retired version, named with the
        // command that writes a current model.
        let mut retired = TWO_BLOCKS.to_vec();
        retired[4..6].copy_from_slice(&1u16.to_le_bytes());
        let body = retired.len() - infer_core::format::CRC_LEN;
        let crc = infer_core::format::crc32(&retired[..body]);
        retired[body..].copy_from_slice(&crc.to_le_bytes());
        let error = Network::from_bytes("model.bin", &retired).err().unwrap();
        assert!(
            error.contains("model.bin is not a format-3 model")
                && error.contains("format version 1, which is retired")
                && error.contains("`trainer fit --out model.bin`"),
            "{error}"
        );
    }

    #[test]
    fn another_input_quantization_gets_a_table() {
        let quant = QuantParams {
            scale: 2.0 / 255.0,
            zero_point: 0,
        };
        let code = input_code((2, 3, 3), &quant);
        let table = code
            .split("PIXEL_TO_INPUT: [i8; 256] = [")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap();
        let values: Vec<i8> = table.split(", ").map(|v| v.parse().unwrap()).collect();
        assert_eq!(values.len(), 256);
        // q = round(p / 2) (odd p are within a rounding error of .5), clamped to 127.
        for (p, q) in [
            (0, 0),
            (2, 1),
            (4, 2),
            (100, 50),
            (252, 126),
            (254, 127),
            (255, 127),
        ] {
            assert_eq!(values[p], q, "pixel {p}");
        }
        assert!(code.contains("*value = PIXEL_TO_INPUT[usize::from(pixel)];"));
        assert!(code.contains("(2×3×3, row-major"));
    }
}
