"""Golden training runs from real Keras, for the trainer's parity tests.

For every case (a spec file of `models/` and a seed), this builds the network in Keras from
the spec, sets its initial weights, runs Adam steps on a fixed subset of MNIST in a fixed batch
order with fixed dropout masks, and writes what Keras computed under `tests/keras-golden/`:

- `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`: the images used (the first
  `IMAGES` training images of `data/mnist`), shared by the cases;
- `<case>/golden.json`: the setup, the per-step losses, the tensors' names and shapes;
- `<case>/grads-step1.f32`: the gradient of the data loss (without L1/L2) with respect to
  every trainable tensor at step 1;
- `<case>/grads-step1-float64.f32` (cases with batch norm): the same gradients computed by
  Keras in float64, rounded to float32; `<case>/moving-step1-float64.f32`: batch norm's moving
  statistics after step 1 computed so (the non-trainable tensors, in order);
- `<case>/weights-step<k>.f32`: every weight (batch norm's moving statistics included) after
  step k, for the case's checkpoints (step 1, the last step, and for some cases one between).

Tensors are little-endian float32, concatenated in Keras' `layer.get_weights()` order, which is
the trainer's `Model::values` order.

The initial weights and the dropout masks are not drawn from Keras' generators but from a small
portable one (SplitMix64, see `uniforms`), so that the Rust test regenerates exactly the same
values instead of loading megabytes of masks; the golden file keeps checksums of both. The
weights follow Keras' Glorot-uniform rule (limit sqrt(6 / (fan_in + fan_out))), biases 0,
batch norm's gamma 1 and beta 0. Dropout runs through TensorFlow's own dropout
(`tf.nn.experimental.general_dropout`, the code behind Keras' `Dropout` layer) with these
uniforms as its random numbers: a value is kept when its uniform is >= rate.

Run through `cargo xtask keras-golden`, which makes the pinned venv; by hand:
`python golden.py --root <repository root>`.
"""

import argparse
import gzip
import json
import os
import struct
import sys
import tomllib

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

# Training images of the golden runs, and the batch size: 2 batches, reused in turn.
IMAGES = 256
BATCH = 128
LEARNING_RATE = 0.001

# Case directory, spec file, seed, the steps after which the weights are kept (the last is the
# number of steps run), the L2 / L1 factors on every kernel (Keras' L1L2 regulariser), and
# whether step 1's gradients are also computed in float64 (for the cases with batch norm, where
# Keras' float32 gradients are the less accurate of the two frameworks').
CASES = [
    {"name": "tutorial", "spec": "models/tutorial.toml", "seed": 1, "checkpoints": [1, 50]},
    {
        "name": "two-blocks",
        "spec": "models/two-blocks.toml",
        "seed": 2,
        "checkpoints": [1, 10, 50],
        "float64_reference": True,
    },
    {
        "name": "strided-l1l2",
        "spec": "tools/keras-golden/specs/strided.toml",
        "seed": 3,
        "checkpoints": [1, 10, 30],
        "l2": 1e-2,
        "l1": 1e-3,
        "float64_reference": True,
    },
    {
        # A dense layer straight on the pixels with every third kernel weight exactly 0: the
        # weights of MNIST's blank border pixels get no gradient from the data, so only L1's
        # gradient at exactly 0 moves them (sign(0) = 0 in TensorFlow: they stay 0).
        "name": "dense-l1-zeros",
        "spec": "tools/keras-golden/specs/dense.toml",
        "seed": 4,
        "checkpoints": [1, 10, 30],
        "l1": 1e-3,
        "zero_kernel_every": 3,
    },
    {
        # Batch norm after a pool, its moving variance started at 1e-3: the validation loss
        # (inference mode) depends on epsilon = 1e-3 and on the moving statistics.
        "name": "pool-norm",
        "spec": "tools/keras-golden/specs/pool-norm.toml",
        "seed": 5,
        "checkpoints": [1, 10, 30],
        "moving_variance": 1e-3,
        "float64_reference": True,
    },
]

# Early stopping: sequences of validation losses fed to Keras' own
# `EarlyStopping(monitor="val_loss", patience=p, restore_best_weights=True)` as `model.fit`
# drives it; written to `early-stopping.json` with the epochs run and the epoch restored.
EARLY_STOPPING = [
    {"patience": 2, "val_loss": [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]},
    {"patience": 2, "val_loss": [1.0, 0.9, 0.95, 0.97, 0.99, 0.8]},
    {"patience": 3, "val_loss": [1.0, 0.9, 0.95, 0.97, 0.99, 0.8]},
    {"patience": 4, "val_loss": [1.0, 0.9, 0.95, 0.97, 0.99, 0.8]},
    {"patience": 2, "val_loss": [1.0, 0.9, 0.9, 0.9, 0.85, 0.8]},
    {"patience": 3, "val_loss": [1.0, 0.9, 0.9, 0.9, 0.85, 0.8]},
    {"patience": 1, "val_loss": [0.5, 0.6, 0.4, 0.3]},
    {"patience": 2, "val_loss": [0.5, 0.6, 0.7, 0.8, 0.1]},
    {"patience": 2, "val_loss": [1.0, 1.1, 0.9, 1.2, 0.8]},
    {"patience": 2, "val_loss": [1.0, 1.1, 1.2, 0.9, 0.7]},
    {"patience": 0, "val_loss": [1.0, 0.9, 0.95, 0.8]},
    {"patience": 1, "val_loss": [0.7]},
]

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
# What a stream of uniforms is for (the first word of its key).
KIND_INIT = 1
KIND_DROPOUT = 2


def mix(z):
    """SplitMix64's finaliser on a Python int."""
    z &= MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def stream_key(seed, *words):
    """key = mix(seed), then key = mix(key ^ word) for each word."""
    key = mix(seed)
    for word in words:
        key = mix(key ^ word)
    return key


def uniforms(key, n):
    """n float32 uniforms in [0, 1): u_i = (mix(key + (i + 1)·GOLDEN) >> 40) / 2^24."""
    i = np.arange(1, n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(key) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(40)).astype(np.float64) / float(1 << 24)).astype(np.float32)


def glorot(seed, layer, shape, fan_in, fan_out):
    """float32((2u − 1) · limit), computed in float64, u from stream (seed, INIT, layer)."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    u = uniforms(stream_key(seed, KIND_INIT, layer), int(np.prod(shape))).astype(np.float64)
    return ((2.0 * u - 1.0) * limit).astype(np.float32).reshape(shape)


def read_idx(path, header):
    with open(path, "rb") as f:
        data = f.read()
    return data[header:]


def write_gz(path, data):
    # mtime 0 and no name: the same bytes on every run.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
            f.write(data)


def build(spec, seed, l2=0.0, l1=0.0, zero_every=None, moving_variance=None):
    """The spec's network in Keras. Returns (model, steps): steps are ("layer", keras layer)
    or ("dropout", spec index, rate), in order; the initial weights are set (with
    `zero_every`, every kernel's values at flat indices divisible by it are 0; with
    `moving_variance`, every batch norm's moving variance starts at that value)."""
    h, w, c = spec["input"]
    inputs = keras.Input((h, w, c))
    x = inputs
    steps = []
    # Keras' L1L2: l1·Σ|w| + l2·Σw² added to the loss, for every kernel.
    reg = keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None
    for index, layer in enumerate(spec["layer"]):
        kind = layer["type"]
        if kind == "conv2d":
            k = keras.layers.Conv2D(
                layer["filters"],
                layer["kernel"],
                strides=layer.get("stride", 1),
                padding=layer.get("padding", "valid"),
                activation=None if layer.get("activation", "none") == "none" else layer["activation"],
                kernel_regularizer=reg,
            )
            steps.append(("layer", k, index))
        elif kind == "maxpool2d":
            steps.append(("layer", keras.layers.MaxPooling2D(layer.get("pool", 2)), index))
        elif kind == "flatten":
            steps.append(("layer", keras.layers.Flatten(), index))
        elif kind == "dense":
            act = layer.get("activation", "none")
            k = keras.layers.Dense(layer["units"], activation=None if act == "none" else act, kernel_regularizer=reg)
            steps.append(("layer", k, index))
        elif kind == "dropout":
            steps.append(("dropout", index, float(layer["rate"])))
        elif kind == "batchnorm":
            steps.append(("layer", keras.layers.BatchNormalization(), index))
            if layer.get("activation", "none") == "relu":
                steps.append(("layer", keras.layers.ReLU(), index))
        else:
            raise SystemExit(f"layer type {kind} is not in the golden builder")
    for step in steps:
        if step[0] == "layer":
            x = step[1](x)
    model = keras.Model(inputs, x)
    # Initial weights: Glorot-uniform kernels from the portable stream, the rest Keras' defaults.
    for step in steps:
        if step[0] != "layer":
            continue
        layer, index = step[1], step[2]
        if isinstance(layer, keras.layers.BatchNormalization) and moving_variance is not None:
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, moving_variance, np.float32))
            continue
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, ci, f = layer.kernel.shape
            kernel = glorot(seed, index, (kh, kw, ci, f), kh * kw * ci, kh * kw * f)
        elif isinstance(layer, keras.layers.Dense):
            fi, fo = layer.kernel.shape
            kernel = glorot(seed, index, (fi, fo), fi, fo)
        else:
            continue
        if zero_every:
            kernel.reshape(-1)[::zero_every] = 0.0
        layer.kernel.assign(kernel)
    return model, steps


def weight_layers(steps):
    return [s[1] for s in steps if s[0] == "layer" and s[1].weights]


def forward(steps, x, masks):
    """The network in training mode, dropout through TensorFlow's own with the given uniforms."""
    h = x
    k = 0
    for step in steps:
        if step[0] == "layer":
            h = step[1](h, training=True)
        else:
            u = masks[k]
            h = tf.nn.experimental.general_dropout(
                h, step[2], uniform_sampler=lambda shape, dtype, u=u: tf.reshape(u, shape)
            )
            k += 1
    return h


def float64_step1(spec, seed, case, x, y, masks):
    """Step 1's data-loss gradients and the moving statistics after its forward pass (every
    non-trainable tensor, in order), computed in float64 from the same weights, batch and
    masks: the reference that says which of two float32 results is the more accurate."""
    keras.backend.clear_session()
    keras.config.set_floatx("float64")
    try:
        model, steps = build(spec, seed, 0.0, 0.0, case.get("zero_kernel_every"), case.get("moving_variance"))
        with tf.GradientTape() as tape:
            h = forward(steps, tf.constant(x, dtype=tf.float64), [tf.cast(u, tf.float64) for u in masks])
            loss = keras.losses.CategoricalCrossentropy()(tf.constant(y, dtype=tf.float64), h)
        grads = tape.gradient(loss, model.trainable_variables)
        moving = [np.asarray(v, dtype=np.float32) for layer in weight_layers(steps) for v in layer.non_trainable_weights]
        return [np.asarray(g, dtype=np.float32) for g in grads], moving
    finally:
        keras.config.set_floatx("float32")
        keras.backend.clear_session()


def run_case(root, out_dir, case, images, labels):
    name, spec_path, seed, checkpoints = case["name"], case["spec"], case["seed"], case["checkpoints"]
    l2, l1 = case.get("l2", 0.0), case.get("l1", 0.0)
    total_steps = checkpoints[-1]
    with open(os.path.join(root, spec_path), "rb") as f:
        spec = tomllib.load(f)
    keras.utils.set_random_seed(seed)
    model, steps = build(spec, seed, l2, l1, case.get("zero_kernel_every"), case.get("moving_variance"))
    layers = weight_layers(steps)
    names, shapes = [], []
    kinds = {i: l["type"] for i, l in enumerate(spec["layer"])}
    index_of = {id(s[1]): s[2] for s in steps if s[0] == "layer"}
    for layer in layers:
        for v in layer.weights:
            index = index_of[id(layer)]
            names.append(f"layer {index} {kinds[index]}/{v.name}")
            shapes.append(list(v.shape))
    init = [np.asarray(w, dtype=np.float32) for layer in layers for w in layer.get_weights()]
    classes = spec["layer"][-1]["units"]
    x_all = (images.astype(np.float32) / np.float32(255)).reshape((-1,) + tuple(spec["input"]))
    y_all = np.eye(classes, dtype=np.float32)[labels]
    loss_fn = keras.losses.CategoricalCrossentropy()
    optimizer = keras.optimizers.Adam(learning_rate=LEARNING_RATE)
    variables = model.trainable_variables
    optimizer.build(variables)
    dropouts = [s for s in steps if s[0] == "dropout"]

    # As Keras' TensorFlow train_step: forward in training mode, the compiled loss, the
    # tape's gradients, the optimizer's apply; in a tf.function as model.fit runs it.
    @tf.function
    def train_step(x, y, masks):
        with tf.GradientTape(persistent=True) as tape:
            h = forward(steps, x, masks)
            data_loss = loss_fn(y, h)
            # As Keras' compute_loss: the layers' regularisation losses added.
            loss = data_loss + tf.add_n(model.losses) if model.losses else data_loss
        grads = tape.gradient(loss, variables)
        # What is recorded: the data loss's gradient, as the trainer's forward_backward leaves
        # it (its Adam step adds the regularisation's).
        data_grads = tape.gradient(data_loss, variables)
        del tape
        optimizer.apply_gradients(zip(grads, variables))
        return loss, data_grads

    # Keras' `val_loss`, as EarlyStopping monitors it: `evaluate` in inference mode (batch
    # norm's moving statistics, no dropout), batches of 128, the regularisation included.
    model.compile(loss=keras.losses.CategoricalCrossentropy())
    evaluation_losses = []

    losses, keep_counts = [], []
    batches = IMAGES // BATCH
    grads_step1 = None
    kept_weights = {}
    for step in range(total_steps):
        b = step % batches
        x = x_all[b * BATCH:(b + 1) * BATCH]
        y = y_all[b * BATCH:(b + 1) * BATCH]
        masks = []
        for _, index, rate in dropouts:
            n = BATCH * dropout_len(spec, index)
            u = uniforms(stream_key(seed, KIND_DROPOUT, index, step), n)
            masks.append(tf.constant(u))
            if step == 0:
                keep_counts.append({"layer": index, "kept": int(np.sum(u >= np.float32(rate)))})
        loss, grads = train_step(tf.constant(x), tf.constant(y), masks)
        losses.append(float(np.float32(loss)))
        if step == 0:
            grads_step1 = [np.asarray(g, dtype=np.float32) for g in grads]
            first_batch = (x, y, masks)
        if step + 1 in checkpoints:
            kept_weights[step + 1] = [np.asarray(w, dtype=np.float32) for layer in layers for w in layer.get_weights()]
            loss = model.evaluate(x_all, y_all, batch_size=BATCH, verbose=0)
            evaluation_losses.append({"step": step + 1, "loss": float(np.float32(loss))})

    case_dir = os.path.join(out_dir, name)
    os.makedirs(case_dir, exist_ok=True)
    files = [("grads-step1.f32", grads_step1)]
    if case.get("float64_reference"):
        grads64, moving64 = float64_step1(spec, seed, case, *first_batch)
        files.append(("grads-step1-float64.f32", grads64))
        files.append(("moving-step1-float64.f32", moving64))
    files += [(f"weights-step{k}.f32", kept_weights[k]) for k in checkpoints]
    for file, tensors in files:
        with open(os.path.join(case_dir, file), "wb") as f:
            for t in tensors:
                f.write(np.ascontiguousarray(t, dtype="<f4").tobytes())
    trainable = {f"layer {index_of[id(layer)]} {kinds[index_of[id(layer)]]}/{v.name}" for layer in layers for v in layer.trainable_weights}
    golden = {
        "about": "Keras golden run for the trainer's parity test; made by tools/keras-golden/golden.py",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "spec": spec_path,
        "seed": seed,
        "images": IMAGES,
        "batch_size": BATCH,
        "steps": total_steps,
        "learning_rate": LEARNING_RATE,
        "l2": l2,
        "l1": l1,
        "zero_kernel_every": case.get("zero_kernel_every"),
        "moving_variance": case.get("moving_variance"),
        "tensors": [
            {"name": n, "shape": s, "trainable": n in trainable, "init_sum": float(np.sum(t, dtype=np.float64))}
            for n, s, t in zip(names, shapes, init)
        ],
        "dropout_kept_step1": keep_counts,
        "losses": losses,
        "gradients_step1": "grads-step1.f32",
        "gradients_step1_float64": "grads-step1-float64.f32" if case.get("float64_reference") else None,
        "moving_step1_float64": "moving-step1-float64.f32" if case.get("float64_reference") else None,
        "weights": [{"step": k, "file": f"weights-step{k}.f32"} for k in checkpoints],
        "evaluation_losses": evaluation_losses,
    }
    with open(os.path.join(case_dir, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print(f"{name}: loss {losses[0]:.6f} -> {losses[-1]:.6f} after {total_steps} steps")


def early_stopping(out_dir):
    """Runs Keras' EarlyStopping callback over each sequence of `EARLY_STOPPING` as
    `model.fit` does (`on_train_begin`, `on_epoch_end` after each epoch until the model's
    `stop_training`, `on_train_end`), the model's one weight set to the epoch number (from 1)
    before each epoch's end, and writes the epochs run and the epoch whose weight is restored."""
    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    results = []
    for case in EARLY_STOPPING:
        callback = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=case["patience"], restore_best_weights=True
        )
        callback.set_model(model)
        model.stop_training = False
        callback.on_train_begin()
        run = 0
        for epoch, val_loss in enumerate(case["val_loss"]):
            model.set_weights([np.array([[epoch + 1]], dtype=np.float32)])
            callback.on_epoch_end(epoch, {"loss": val_loss, "val_loss": val_loss})
            run = epoch + 1
            if model.stop_training:
                break
        callback.on_train_end()
        restored = int(model.get_weights()[0][0, 0])
        results.append(dict(case, epochs_run=run, restored_epoch=restored))
    golden = {
        "about": "Keras' EarlyStopping(monitor='val_loss', restore_best_weights=True) on fixed "
        "validation losses; made by tools/keras-golden/golden.py",
        "keras": keras.__version__,
        "cases": results,
    }
    with open(os.path.join(out_dir, "early-stopping.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    print(f"early stopping: {len(results)} sequences")


def dropout_len(spec, index):
    """Values per image at the input of spec layer `index`."""
    h, w, c = spec["input"]
    for layer in spec["layer"][:index]:
        kind = layer["type"]
        if kind == "conv2d":
            k, s = layer["kernel"], layer.get("stride", 1)
            if layer.get("padding", "valid") == "same":
                h, w = -(-h // s), -(-w // s)
            else:
                h, w = (h - k) // s + 1, (w - k) // s + 1
            c = layer["filters"]
        elif kind == "maxpool2d":
            p = layer.get("pool", 2)
            h, w = h // p, w // p
        elif kind == "flatten":
            h, w, c = 1, 1, h * w * c
        elif kind == "dense":
            h, w, c = 1, 1, layer["units"]
    return h * w * c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="repository root")
    parser.add_argument("--data", default="data/mnist", help="MNIST IDX directory (from the root)")
    parser.add_argument("--out", default="tests/keras-golden", help="output directory (from the root)")
    args = parser.parse_args()
    tf.config.experimental.enable_op_determinism()
    data = os.path.join(args.root, args.data)
    images = np.frombuffer(read_idx(os.path.join(data, "train-images-idx3-ubyte"), 16), dtype=np.uint8)
    labels = np.frombuffer(read_idx(os.path.join(data, "train-labels-idx1-ubyte"), 8), dtype=np.uint8)
    images = images[: IMAGES * 784].reshape(IMAGES, 28, 28, 1)
    labels = labels[:IMAGES]
    out_dir = os.path.join(args.root, args.out)
    os.makedirs(out_dir, exist_ok=True)
    header = struct.pack(">IIII", 0x803, IMAGES, 28, 28)
    write_gz(os.path.join(out_dir, "train-images-idx3-ubyte.gz"), header + images.tobytes())
    write_gz(os.path.join(out_dir, "train-labels-idx1-ubyte.gz"), struct.pack(">II", 0x801, IMAGES) + labels.tobytes())
    for case in CASES:
        keras.backend.clear_session()
        run_case(args.root, out_dir, case, images, labels)
    early_stopping(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
