"""Keras' test accuracy on a spec's network, seed by seed, for comparing with `trainer fit`.

Trains as the trainer's `fit` does: every training image, shuffled each epoch, batch 128,
Adam(0.001), categorical cross-entropy, 6 epochs, the test set as validation data; Keras' own
Glorot-uniform initialisation and dropout, seeded with `keras.utils.set_random_seed(seed)`.
Prints one JSON line per seed: {"seed", "test_accuracy", "seconds"}.

    python accuracy.py --data /usr/share/datasets/fashion-mnist --spec models/tutorial.toml --seeds 1 2 3 4 5
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time
import tomllib

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402


def read_idx(path):
    for p in (path, path + ".gz"):
        if os.path.exists(p):
            with open(p, "rb") as f:
                data = f.read()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            return data
    raise SystemExit(f"no {path}[.gz]")


def load(data, kind):
    images = read_idx(os.path.join(data, f"{kind}-images-idx3-ubyte"))
    labels = read_idx(os.path.join(data, f"{kind}-labels-idx1-ubyte"))
    n, rows, cols = struct.unpack(">III", images[4:16])
    x = np.frombuffer(images[16:], dtype=np.uint8).reshape(n, rows, cols, 1)
    y = np.frombuffer(labels[8:], dtype=np.uint8)
    return x.astype("float32") / 255, y


def build(spec):
    layers = [keras.Input(tuple(spec["input"]))]
    for layer in spec["layer"]:
        kind = layer["type"]
        act = layer.get("activation", "none")
        act = None if act == "none" else act
        if kind == "conv2d":
            layers.append(keras.layers.Conv2D(layer["filters"], layer["kernel"], strides=layer.get("stride", 1),
                                              padding=layer.get("padding", "valid"), activation=act))
        elif kind == "maxpool2d":
            layers.append(keras.layers.MaxPooling2D(layer.get("pool", 2)))
        elif kind == "flatten":
            layers.append(keras.layers.Flatten())
        elif kind == "dense":
            layers.append(keras.layers.Dense(layer["units"], activation=act))
        elif kind == "dropout":
            layers.append(keras.layers.Dropout(layer["rate"]))
        elif kind == "batchnorm":
            layers.append(keras.layers.BatchNormalization())
            if act == "relu":
                layers.append(keras.layers.ReLU())
    return keras.Sequential(layers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--spec", default="models/tutorial.toml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow's threads (0: its default)")
    args = parser.parse_args()
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    with open(args.spec, "rb") as f:
        spec = tomllib.load(f)
    x_train, y_train = load(args.data, "train")
    x_test, y_test = load(args.data, "t10k")
    classes = spec["layer"][-1]["units"]
    y_train = keras.utils.to_categorical(y_train, classes)
    y_test = keras.utils.to_categorical(y_test, classes)
    for seed in args.seeds:
        keras.utils.set_random_seed(seed)
        model = build(spec)
        model.compile(loss="categorical_crossentropy", optimizer=keras.optimizers.Adam(0.001), metrics=["accuracy"])
        start = time.time()
        model.fit(x_train, y_train, batch_size=128, epochs=args.epochs, validation_data=(x_test, y_test), verbose=0)
        _, acc = model.evaluate(x_test, y_test, verbose=0)
        print(json.dumps({"seed": seed, "test_accuracy": acc, "seconds": round(time.time() - start, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
