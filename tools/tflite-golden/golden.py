"""Makes the TFLite golden fixtures of `trainer import` (run by `cargo xtask tflite-golden`).

1. Trains the Keras MNIST tutorial network (Conv2D 32 3x3 ReLU -> MaxPool 2x2 -> Dropout ->
   Flatten -> Dropout -> Dense 10) for EPOCHS epochs on the kit's MNIST split, seeded.
2. Converts it with TFLiteConverter to a full-integer int8 model (TFLITE_BUILTINS_INT8, int8
   input and output, calibrated on CALIBRATION training images), twice: with the Dense layer's
   logits as the output (`tutorial_int8.tflite`, what the engine runs) and with the softmax
   (`tutorial_softmax_int8.tflite`, which the importer must refuse until the engine has an
   int8 softmax), and once more with float32 input and output (`tutorial_float_io.tflite`: a
   QUANTIZE first, a DEQUANTIZE last), run on the float images.
3. Runs the first INPUTS test images through TensorFlow Lite Micro's interpreter
   (`tflite_micro.python.tflite_micro.runtime.Interpreter`, its reference kernels) and writes
   the int8 inputs and TFLM's int8 outputs as .npy files.
4. Does the same for MLPerf Tiny's anomaly-detection model (MLPERF_DIR/ad01_int8.tflite) on
   INPUTS seeded random int8 inputs.
5. Runs MLPerf Tiny's three other models (keyword spotting, ResNet-8, visual wake words) on
   INPUTS xorshift32 inputs each (`xorshift_inputs`: regenerated, not stored) and writes
   TFLM's outputs, for when the engine runs them.
6. Runs the same inputs through the desktop interpreter (tf.lite.Interpreter) and prints how
   many outputs differ from TFLM's (its int8 FULLY_CONNECTED may rescale with one rounding,
   TFLM with two); nothing of it is written.

Usage: golden.py DATA_DIR MLPERF_DIR OUT_DIR
"""

import json
import os
import struct
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tflite_micro.python.tflite_micro import runtime as tflm  # noqa: E402

EPOCHS = 2
SEED = 1
CALIBRATION = 500
INPUTS = 100
XORSHIFT_SEED = 0x2545F491
# The MLPerf Tiny models the engine cannot run yet: their TFLM outputs on xorshift inputs,
# ready for when it can (only the outputs are stored; the inputs are regenerated).
MLPERF_LATER = [
    ("kws", "kws_ref_model.tflite"),
    ("resnet", "pretrainedResnet_quant.tflite"),
    ("vww", "vww_96_int8.tflite"),
]


def read_idx(path):
    """The array of an uncompressed IDX file (big-endian header, unsigned bytes)."""
    with open(path, "rb") as f:
        data = f.read()
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise SystemExit(f"{path}: not an IDX file of unsigned bytes")
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def tutorial(softmax, batch_size=None):
    """The tutorial network; with a fixed `batch_size` Flatten converts to one RESHAPE (with
    Keras 3's dynamic batch it becomes SHAPE, STRIDED_SLICE, PACK and RESHAPE)."""
    layers = [
        tf.keras.Input((28, 28, 1), batch_size=batch_size),
        tf.keras.layers.Conv2D(32, 3, activation="relu"),
        tf.keras.layers.MaxPooling2D(2),
        tf.keras.layers.Dropout(0.25),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dropout(0.5),
        tf.keras.layers.Dense(10),
    ]
    if softmax:
        layers.append(tf.keras.layers.Softmax())
    return tf.keras.Sequential(layers)


def convert(model, calibration, int8_io=True):
    """Full-integer int8 conversion; with `int8_io` False the input and output stay float32
    (a QUANTIZE first, a DEQUANTIZE last)."""

    def representative():
        for image in calibration:
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def quant_of(details):
    """(scale, zero point) of a per-tensor quantized tensor, from TFLM's details."""
    params = details["quantization_parameters"]
    return float(params["scales"][0]), int(params["zero_points"][0])


def xorshift_inputs(count, size, seed=XORSHIFT_SEED):
    """`count` rows of `size` int8 values: xorshift32 (13, 17, 5) from `seed`, each value the
    top byte of the state after a step, as two's complement. The Rust tests regenerate them."""
    state = seed
    values = np.empty(count * size, dtype=np.uint8)
    for i in range(count * size):
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        values[i] = state >> 24
    return values.view(np.int8).reshape(count, size)


def golden(out_dir, name, model_bytes, inputs, write_inputs=True):
    """Runs `inputs` (one row per inference, each of the model's input shape) through TFLM,
    writes NAME_inputs.npy and NAME_tflm_outputs.npy, and returns TFLM's outputs with how many
    values the desktop interpreter gives otherwise and its largest difference."""
    micro = tflm.Interpreter.from_bytes(model_bytes)
    shape = micro.get_input_details(0)["shape"]
    outputs = []
    for x in inputs:
        micro.set_input(x.reshape(shape), 0)
        micro.invoke()
        outputs.append(micro.get_output(0)[0].copy())
        micro.reset()
    outputs = np.stack(outputs)
    if write_inputs:
        np.save(os.path.join(out_dir, f"{name}_inputs.npy"), inputs)
    np.save(os.path.join(out_dir, f"{name}_tflm_outputs.npy"), outputs)

    desktop = tf.lite.Interpreter(model_content=model_bytes)
    desktop.allocate_tensors()
    inp, out = desktop.get_input_details()[0], desktop.get_output_details()[0]
    differ = 0
    largest = 0
    for x, want in zip(inputs, outputs):
        desktop.set_tensor(inp["index"], x.reshape(inp["shape"]))
        desktop.invoke()
        got = desktop.get_tensor(out["index"])[0]
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        differ += int(np.count_nonzero(diff))
        largest = max(largest, float(diff.max()))
    return outputs, differ, largest


def main():
    data_dir, mlperf_dir, out_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    tf.keras.utils.set_random_seed(SEED)
    train_x = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte"))
    train_y = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte"))
    test_x = read_idx(os.path.join(data_dir, "t10k-images-idx3-ubyte"))
    train_x = (train_x.astype(np.float32) / 255.0)[..., None]
    test_x = (test_x.astype(np.float32) / 255.0)[..., None]

    logits_model = tutorial(softmax=False)
    logits_model.compile(
        optimizer="adam",
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    logits_model.fit(train_x, train_y, batch_size=128, epochs=EPOCHS, verbose=2)
    fixed_logits = tutorial(softmax=False, batch_size=1)
    fixed_logits.set_weights(logits_model.get_weights())
    softmax_model = tutorial(softmax=True, batch_size=1)
    softmax_model.set_weights(logits_model.get_weights())

    calibration = train_x[:CALIBRATION]
    tutorial_bytes = convert(fixed_logits, calibration)
    softmax_bytes = convert(softmax_model, calibration)
    with open(os.path.join(out_dir, "tutorial_int8.tflite"), "wb") as f:
        f.write(tutorial_bytes)
    with open(os.path.join(out_dir, "tutorial_softmax_int8.tflite"), "wb") as f:
        f.write(softmax_bytes)
    float_io_bytes = convert(fixed_logits, calibration, int8_io=False)
    with open(os.path.join(out_dir, "tutorial_float_io.tflite"), "wb") as f:
        f.write(float_io_bytes)

    in_scale, in_zero = quant_of(
        tflm.Interpreter.from_bytes(tutorial_bytes).get_input_details(0)
    )
    images = test_x[:INPUTS]
    inputs = np.clip(np.round(images / in_scale) + in_zero, -128, 127).astype(np.int8)
    outputs, differ, largest = golden(out_dir, "tutorial", tutorial_bytes, inputs)
    # The float-edged model on the float images (its QUANTIZE and DEQUANTIZE run in TFLM).
    _, float_differ, _ = golden(out_dir, "tutorial_float_io", float_io_bytes, images)
    out_scale, out_zero = quant_of(
        tflm.Interpreter.from_bytes(tutorial_bytes).get_output_details(0)
    )
    labels = read_idx(os.path.join(data_dir, "t10k-labels-idx1-ubyte"))[:INPUTS]
    summary = {
        "epochs": EPOCHS,
        "seed": SEED,
        "calibration_images": CALIBRATION,
        "inputs": INPUTS,
        "input_quant": [in_scale, in_zero],
        "output_quant": [out_scale, out_zero],
        "tflm_correct": int(np.count_nonzero(outputs.argmax(1) == labels)),
        "desktop_values_differing_from_tflm": differ,
        "desktop_largest_difference_lsb": int(largest),
        "tensorflow": tf.__version__,
        "float_io_desktop_values_differing_from_tflm": float_differ,
    }
    # The anomaly-detection model of MLPerf Tiny, on seeded random int8 inputs.
    with open(os.path.join(mlperf_dir, "ad01_int8.tflite"), "rb") as f:
        ad_bytes = f.read()
    rng = np.random.default_rng(SEED)
    ad_inputs = rng.integers(-128, 128, size=(INPUTS, 640), dtype=np.int8)
    _, ad_differ, ad_largest = golden(out_dir, "ad01", ad_bytes, ad_inputs)
    summary["ad01_desktop_values_differing_from_tflm"] = ad_differ
    summary["ad01_desktop_largest_difference_lsb"] = int(ad_largest)
    for name, file in MLPERF_LATER:
        with open(os.path.join(mlperf_dir, file), "rb") as f:
            model_bytes = f.read()
        shape = tflm.Interpreter.from_bytes(model_bytes).get_input_details(0)["shape"]
        size = int(np.prod(shape))
        inputs = xorshift_inputs(INPUTS, size)
        _, differ, largest = golden(out_dir, name, model_bytes, inputs, write_inputs=False)
        summary[f"{name}_desktop_values_differing_from_tflm"] = differ
        summary[f"{name}_desktop_largest_difference_lsb"] = int(largest)
    summary["xorshift_seed"] = XORSHIFT_SEED
    summary["xorshift_first_values"] = xorshift_inputs(1, 8)[0].tolist()
    print(json.dumps(summary, indent=1))
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
