//! `FIRMWARE_SPEC`: the network a spec file declares. The spec is read with the
//! trainer's own parser and planned with its own int8 plan (`model_spec`); the
//! model.bin is checked against that plan operation by operation; the RAM the
//! network needs is estimated for the board check; and the network's Rust code —
//! typed layers with the shapes as const generics, buffer sizes, loading and
//! inference — is generated for `src/net/spec.rs` to include.

use infer_core::format::ModelFile;
use infer_core::stack::format::Padding as FilePadding;
use infer_core::stack::{Op, StackFile};
use model_spec::plan::{OpKind, Plan};
use model_spec::spec::{Padding, Spec, PRESETS};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Stack the firmware needs while it classifies, besides the network's buffers,
/// patch and input: `main`'s and the digit loop's frames, the layer calls,
/// printing and the SysTick exception. Measured (`stack_peak_bytes` less
/// `scratch_bytes` and the input): 1.1 KiB on the Cortex-M4F, 1.6 KiB on the M0;
/// `tests/tests/stack_firmware.rs` checks every run stays within the estimate.
pub const RUN_STACK: usize = 1792;

/// Stack decoding the model.bin takes (`net::load`: `StackFile::decode`, which
/// keeps the operations encoded and decodes one at a time, and each layer's
/// `from_file`), before the buffers exist. Measured for two-blocks:
/// `load_stack_bytes` 812 B on the M4F, 868 B on the M0, plus `main`'s frame
/// and the reset handler's (under 512 B, which `tests/tests/stack_firmware.rs`
/// allows for).
pub const LOAD_STACK: usize = 1536;

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
        let file = StackFile::decode(bytes).map_err(|error| {
            let hint = if ModelFile::decode(bytes).is_ok() {
                format!(
                    " (it is a format-1 tutorial model: build without FIRMWARE_SPEC, or \
                     write a model for the spec with `trainer fit --arch {spec} --out model.bin`)"
                )
            } else {
                String::new()
            };
            format!("{model} is not a format-3 model to run {spec}: {error}{hint}")
        })?;
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
            let found = kind_of(&op);
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
                let _ = write!(message, "; {model} operation {index} is {}", kind_of(&op));
            }
            for (index, op) in self.plan.ops.iter().enumerate().skip(found) {
                let _ = write!(message, "; {spec} operation {index} is {}", op.kind);
            }
            return Err(message);
        }
        Ok(())
    }

    /// The network's Rust code, for `src/net/spec.rs` to include.
    pub fn generate(&self) -> String {
        generate(&self.name, &self.plan, &Ram::of(&self.plan))
    }
}

/// `h×w×c`.
fn hwc((h, w, c): (usize, usize, usize)) -> String {
    format!("{h}×{w}×{c}")
}

/// A model file's operation in the plan's terms, so that both compare with `==`
/// and print alike.
fn kind_of(op: &Op<'_>) -> OpKind {
    match *op {
        Op::Conv2d(c) => {
            let g = c.geometry();
            OpKind::Conv2d {
                in_h: g.in_h,
                in_w: g.in_w,
                in_c: g.in_c,
                filters: g.filters,
                kernel: usize::from(c.kernel),
                stride: g.stride,
                padding: match c.padding {
                    FilePadding::Valid => Padding::Valid,
                    FilePadding::Same => Padding::Same,
                },
                out_h: g.out_h(),
                out_w: g.out_w(),
                relu: c.relu,
            }
        }
        Op::MaxPool2d(p) => OpKind::MaxPool2d {
            in_h: usize::from(p.in_h),
            in_w: usize::from(p.in_w),
            channels: usize::from(p.channels),
            pool: usize::from(p.pool),
        },
        Op::Dense(d) => OpKind::Dense {
            inputs: d.inputs as usize,
            units: usize::from(d.units),
            relu: d.relu,
        },
    }
}

/// The RAM one inference of a plan needs besides the program's own stack, in
/// bytes, as the generated code lays it out.
pub struct Ram {
    /// The two ping-pong buffers: operation `i` writes buffer `i % 2`, except the
    /// last, which writes the logits.
    pub buffers: [usize; 2],
    /// The packed convolution patch (the largest convolution's).
    pub patch: usize,
    /// The int8 input image.
    pub input: usize,
}

impl Ram {
    /// The RAM of `plan`.
    pub fn of(plan: &Plan) -> Self {
        Self {
            buffers: plan.buffers(),
            patch: 4 * plan.patch_words(),
            input: plan.input_len(),
        }
    }

    /// Buffers, patch and input: what the network keeps while it classifies.
    pub fn network(&self) -> usize {
        self.buffers[0] + self.buffers[1] + self.patch + self.input
    }

    /// The RAM the firmware needs for the network: the network and [`RUN_STACK`]
    /// while it classifies, or [`LOAD_STACK`] while it loads, whichever is more.
    pub fn total(&self) -> usize {
        (self.network() + RUN_STACK).max(LOAD_STACK)
    }

    /// How [`Ram::total`] adds up, for messages.
    pub fn explain(&self) -> String {
        format!(
            "ping-pong buffers {} + {}, patch {}, input {} and {RUN_STACK} of stack while \
             it classifies, at least {LOAD_STACK} while the model loads",
            self.buffers[0], self.buffers[1], self.patch, self.input
        )
    }
}

/// The generated module: see the text it writes.
fn generate(spec: &str, plan: &Plan, ram: &Ram) -> String {
    let ops = &plan.ops;
    let last = ops.len().saturating_sub(1);
    let (h, w, c) = plan.input;
    let mut used = Imports::default();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };

    line(&format!(
        "// Generated by firmware-example/build/network.rs from FIRMWARE_SPEC={spec}; do not edit."
    ));
    line("// Operation i reads the input (i = 0) or buffer (i - 1) % 2 and writes buffer i % 2;");
    line("// the last writes the logits. Every shape is a const generic, checked against the");
    line("// model.bin when it loads (`Network::from_bytes`) and by the build script before.");
    line("");
    let mut body = String::new();
    let mut item = |text: String| {
        body.push_str(&text);
        body.push('\n');
    };

    item(format!(
        "/// `FIRMWARE_SPEC` as given to the build.\npub const SPEC: &str = {spec:?};"
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
    let names: Vec<String> = ops
        .iter()
        .enumerate()
        .map(|(i, op)| format!("\"{}_{i}\"", op.kind.type_name()))
        .collect();
    item(format!(
        "/// Each operation's name in the `layers:` line.\npub const OP_NAMES: [&str; OPS] = [{}];",
        names.join(", ")
    ));
    item(String::new());

    for (i, op) in ops.iter().enumerate() {
        let folded = op
            .batchnorm
            .map_or(String::new(), |b| format!(", batch norm {b} folded in"));
        let (lifetime, ty) = match op.kind {
            OpKind::Conv2d {
                in_h,
                in_w,
                in_c,
                filters,
                kernel,
                stride,
                padding,
                relu,
                ..
            } => {
                used.conv = true;
                let same = padding == Padding::Same;
                (
                    "<'a>",
                    format!(
                        "Conv2d<'a, {in_h}, {in_w}, {in_c}, {kernel}, {filters}, {stride}, {same}, {relu}>"
                    ),
                )
            }
            OpKind::MaxPool2d {
                in_h,
                in_w,
                channels,
                pool,
            } => {
                used.pool = true;
                ("", format!("MaxPool2d<{in_h}, {in_w}, {channels}, {pool}>"))
            }
            OpKind::Dense {
                inputs,
                units,
                relu,
            } => {
                used.dense = true;
                ("<'a>", format!("Dense<'a, {inputs}, {units}, {relu}>"))
            }
        };
        item(format!(
            "/// Operation {i}: {} (spec layer {}{folded}).\npub type Op{i}{lifetime} = {ty};",
            op.kind, op.layer
        ));
    }
    item(String::new());

    item("// Each operation reads what the one before writes.".into());
    let check = |condition: String, message: String| {
        format!("const _: () = assert!(\n    {condition},\n    \"{message}\"\n);")
    };
    item(check(
        "<Op0 as Layer>::IN == INPUT".into(),
        "operation 0 reads the input".into(),
    ));
    for i in 1..ops.len() {
        let p = i - 1;
        item(check(
            format!("<Op{p} as Layer>::OUT == <Op{i} as Layer>::IN"),
            format!("operation {p} writes what operation {i} reads"),
        ));
    }
    item(check(
        format!("<Op{last} as Layer>::OUT == CLASSES"),
        format!("operation {last} writes the logits"),
    ));
    item(String::new());

    let writers: Vec<usize> = (0..last).collect();
    let buffer = |parity: usize, used: &mut Imports| {
        let terms: Vec<String> = writers
            .iter()
            .filter(|&&i| i % 2 == parity)
            .map(|i| format!("<Op{i} as Layer>::OUT"))
            .collect();
        max_of(&terms, used)
    };
    let list = |parity: usize| {
        let list: Vec<String> = writers
            .iter()
            .filter(|&&i| i % 2 == parity)
            .map(usize::to_string)
            .collect();
        if list.is_empty() {
            "none".to_string()
        } else {
            list.join(", ")
        }
    };
    // Buffer A exists if operation 0 is not the last, buffer B if operation 1
    // is not: a network of one or two operations needs fewer buffers.
    let buffers: Vec<(&str, &str, usize)> = [("a", "BUFFER_A", 0), ("b", "BUFFER_B", 1)]
        .into_iter()
        .filter(|&(_, _, first_writer)| first_writer < last)
        .collect();
    for &(field, name, parity) in &buffers {
        let size = buffer(parity, &mut used);
        item(format!(
            "/// Bytes of ping-pong buffer {}: the outputs of operations {}.\npub const {name}: usize = {size};",
            field.to_uppercase(),
            list(parity)
        ));
    }
    let patches: Vec<String> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| matches!(op.kind, OpKind::Conv2d { .. }))
        .map(|(i, _)| format!("<Op{i} as Layer>::PATCH_WORDS"))
        .collect();
    let patch = max_of(&patches, &mut used);
    item(format!(
        "/// Words of the packed convolution patch: the largest convolution's.\npub const PATCH_WORDS: usize = {patch};"
    ));
    // The build's RAM check used model-spec's figures: they must be these.
    let mut agree = vec![format!("PATCH_WORDS * 4 == {}", ram.patch)];
    agree.extend(
        buffers
            .iter()
            .map(|&(_, name, parity)| format!("{name} == {}", ram.buffers[parity])),
    );
    item(format!(
        "const _: () = assert!({}, \"the RAM estimate (model-spec's Plan) differs from the layers' sizes\");",
        agree.join(" && ")
    ));
    item(String::new());

    let declarations: String = buffers
        .iter()
        .map(|(field, name, _)| format!("    {field}: [i8; {name}],\n"))
        .collect();
    let zeroes: String = buffers
        .iter()
        .map(|(field, name, _)| format!("            {field}: [0; {name}],\n"))
        .collect();
    item(format!(
        "/// The working memory of one inference: the ping-pong buffers and the patch.
pub struct Scratch {{
{declarations}    patch: [u32; PATCH_WORDS],
}}

impl Scratch {{
    /// Zeroed buffers.
    pub const fn new() -> Self {{
        Self {{
{zeroes}            patch: [0; PATCH_WORDS],
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

    let fields: String = ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let lifetime = if matches!(op.kind, OpKind::MaxPool2d { .. }) {
                ""
            } else {
                "<'a>"
            };
            format!("    op{i}: Op{i}{lifetime},\n")
        })
        .collect();
    item(format!(
        "/// The network {spec} declares, its weights borrowed from the model bytes.
pub struct Network<'a> {{
{fields}}}
"
    ));

    let loads: String = (0..ops.len())
        .map(|i| format!("            op{i}: Op{i}::from_file(&file, {i})?,\n"))
        .collect();
    let used_buffers: String = buffers
        .iter()
        .map(|(field, _, _)| format!("{field}, "))
        .chain(["patch".to_string()])
        .collect();
    let mut runs = String::new();
    for i in 0..ops.len() {
        let src = match i {
            0 => "input",
            _ if (i - 1) % 2 == 0 => "a",
            _ => "b",
        };
        let dst = match i {
            _ if i == last => "&mut logits",
            _ if i % 2 == 0 => "a",
            _ => "b",
        };
        if i == last {
            let _ = writeln!(runs, "        self.op{i}.run_logits({src}, {dst});");
        } else {
            let _ = writeln!(runs, "        self.op{i}.run({src}, patch, {dst});");
        }
        let _ = writeln!(runs, "        probe({i});");
    }
    item(format!(
        "impl<'a> Network<'a> {{
    /// Decodes a format-3 model and checks every operation against this network's types.
    ///
    /// # Errors
    /// A malformed model, or one of another network: the operation and property named.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {{
        let file = StackFile::decode(bytes)?;
        check_op_count(&file, OPS)?;
        Ok(Self {{
{loads}        }})
    }}

    /// The wide logits of `input` (int32 accumulators requantized to one common scale,
    /// zero point 0, not clipped to int8).
    #[inline(always)]
    pub fn infer(&self, input: &[i8; INPUT], scratch: &mut Scratch) -> [i32; CLASSES] {{
        self.infer_probed(input, scratch, |_| {{}})
    }}

    /// [`Network::infer`], calling `probe(i)` after operation `i` (to time the layers).
    #[inline(always)]
    pub fn infer_probed(
        &self,
        input: &[i8; INPUT],
        scratch: &mut Scratch,
        mut probe: impl FnMut(usize),
    ) -> [i32; CLASSES] {{
        let Scratch {{ {used_buffers} }} = scratch;
        let mut logits = [0; CLASSES];
{runs}        logits
    }}
}}"
    ));

    let mut layers = vec!["check_op_count"];
    if used.conv {
        layers.push("Conv2d");
    }
    if used.dense {
        layers.push("Dense");
    }
    layers.push("Layer");
    if used.pool {
        layers.push("MaxPool2d");
    }
    if used.max {
        layers.insert(1, "max");
    }
    line(&format!(
        "use infer_core::stack::layers::{{{}}};",
        layers.join(", ")
    ));
    line("use infer_core::stack::StackFile;");
    line("use infer_core::Error;");
    line("");
    out.push_str(&body);
    out
}

/// Which of the optional names the generated code uses.
#[derive(Default)]
struct Imports {
    conv: bool,
    pool: bool,
    dense: bool,
    max: bool,
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
