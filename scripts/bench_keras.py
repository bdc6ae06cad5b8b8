"""The Keras side of `scripts/bench`: trains one of the tutorial's models with Keras (tensorflow-cpu)
on the same files, with the same architecture, optimizer, batch size and epochs as
`cargo run --release -p fashion --example bench`, and prints one JSON line with the same fields.

Run by `scripts/bench --keras` in the venv it creates under target/; by hand:
    target/keras-venv/bin/python scripts/bench_keras.py --model mlp --epochs 3 --data /usr/share/datasets/fashion-mnist
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from bench_common import arguments, peak_rss_mb, read_idx  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402


def bn() -> keras.layers.Layer:
    return keras.layers.BatchNormalization()  # momentum 0.99, epsilon 1e-3: ours


def block(x, c: int):
    """Notebook 7's residual block: two 3×3 convolutions, each with batch norm, the first with ReLU."""
    y = keras.layers.Conv2D(c, 3, padding="same")(x)
    y = keras.layers.ReLU()(bn()(y))
    y = bn()(keras.layers.Conv2D(c, 3, padding="same")(y))
    return keras.layers.ReLU()(keras.layers.Add()([x, y]))


def resnet() -> keras.Model:
    """Notebook 7's ResNet, in Keras' functional API."""
    inputs = keras.Input((28, 28))
    x = keras.layers.Reshape((28, 28, 1))(inputs)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = bn()(keras.layers.MaxPooling2D(2)(x))
    x = block(x, 32)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = bn()(keras.layers.MaxPooling2D(2)(x))
    x = block(x, 64)
    x = keras.layers.Dense(128)(keras.layers.Flatten()(x))
    x = keras.layers.ReLU()(bn()(x))
    return keras.Model(inputs, keras.layers.Dense(10)(x))


def build(name: str) -> keras.Model:
    """The same layers as fashion::model::{LinearArch, MlpArch, CnnArch}, and notebook 7's ResNet."""
    if name == "resnet":
        return resnet()
    if name == "linear":
        layers = [keras.layers.Flatten(), keras.layers.Dense(10)]
    elif name == "mlp":
        layers = [keras.layers.Flatten(), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)]
    elif name == "cnn":
        layers = [
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10),
        ]
    else:
        raise SystemExit(f"unknown model {name!r}: use linear, mlp, cnn or resnet")
    return keras.Sequential([keras.Input((28, 28))] + layers)


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def main():
    args = arguments()
    keras.utils.set_random_seed(args.seed)

    # As the guide does, but in float32 (the guide's `/ 255.0` gives float64, twice the memory).
    x_train = read_idx(args.data / "train-images-idx3-ubyte").astype(np.float32) / np.float32(255)
    y_train = read_idx(args.data / "train-labels-idx1-ubyte")
    x_test = read_idx(args.data / "t10k-images-idx3-ubyte").astype(np.float32) / np.float32(255)
    y_test = read_idx(args.data / "t10k-labels-idx1-ubyte")

    model = build(args.model)
    if args.model == "resnet":  # notebook 7's optimizer, at a fixed rate
        optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=5e-4)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = EpochTimer()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0, callbacks=[timer])
    _, accuracy = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)

    # The guide's probability model; the same inference batch as ours (128), one warm-up call first.
    probability_model = keras.Sequential([model, keras.layers.Softmax()])
    probability_model.predict(x_test, batch_size=128, verbose=0)
    predict = []
    for _ in range(args.predict_repeats):
        start = time.perf_counter()
        probs = probability_model.predict(x_test, batch_size=128, verbose=0)
        predict.append(time.perf_counter() - start)
    assert probs.shape == (10000, 10)

    print(
        json.dumps(
            {
                "framework": f"Keras {keras.__version__} (TensorFlow {tf.__version__})",
                "model": args.model,
                "batch_size": args.batch_size,
                "epoch_seconds": timer.seconds,
                "predict_seconds": predict,
                "peak_rss_mb": peak_rss_mb(),
                "test_accuracy": float(accuracy),
                "params": int(model.count_params()),
            }
        )
    )


if __name__ == "__main__":
    main()
