"""The U-Net of the seed repository (zhixuhao/unet), written once per block.

``unet()`` with its defaults builds exactly the seed's network: four encoder levels of
two 3x3 ReLU convolutions and 2x2 max pooling (64, 128, 256, 512 filters), a
1024-filter bottleneck, dropout 0.5 after the last encoder level and after the
bottleneck, a decoder of UpSampling2D followed by a 2x2 convolution, concatenation with
the skip connection and two 3x3 convolutions, then Conv2D(2, 3, relu) and a 1x1 sigmoid
convolution: 31,031,685 parameters for one input channel. It compiles with Adam(1e-4),
binary cross-entropy and accuracy, as the seed did.

Only built-in Keras layers are used, so ``.keras`` files load without custom objects.
The output layer always computes in float32, so under a mixed-precision policy the
probabilities, and the loss computed from them, stay float32.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Callable, Sequence

import keras
from keras import layers

from isbi_unet.errors import UserError

SEED_PARAMETER_COUNT = 31_031_685  # unet() with its defaults, one input channel


def _conv(filters: int, kernel_size: int, name: str) -> layers.Conv2D:
    """The seed's convolution: same padding, ReLU, He-normal initialisation."""
    return layers.Conv2D(
        filters,
        kernel_size,
        activation="relu",
        padding="same",
        kernel_initializer="he_normal",
        name=name,
    )


def conv_block(x, filters: int, name: str):
    """Two 3x3 ReLU convolutions: (B, H, W, C) -> (B, H, W, filters)."""
    x = _conv(filters, 3, f"{name}_conv1")(x)
    return _conv(filters, 3, f"{name}_conv2")(x)


def up_block(x, skip, filters: int, name: str):
    """Upsample x by 2, 2x2 conv, concatenate the skip, then a conv block.

    x: (B, H, W, C), skip: (B, 2H, 2W, C') -> (B, 2H, 2W, filters).
    """
    x = layers.UpSampling2D(size=(2, 2), name=f"{name}_upsample")(x)
    x = _conv(filters, 2, f"{name}_upconv")(x)
    x = layers.Concatenate(axis=-1, name=f"{name}_concat")([skip, x])
    return conv_block(x, filters, name)


def unet(
    pretrained_weights: str | Path | None = None,
    input_size: Sequence[int | None] = (256, 256, 1),
    *,
    width: int = 64,
    num_class: int = 1,
    depth: int = 4,
    dropout: float = 0.5,
    learning_rate: float = 1e-4,
    loss: str | Callable | None = None,
    compile: bool = True,
    jit_compile: bool | str = "auto",
    head_activation: str = "relu",
    ema_momentum: float | None = None,
    sigmoid_outputs: int = 1,
) -> keras.Model:
    """Build (and by default compile) the seed's U-Net.

    Args:
      pretrained_weights: optional ``.keras``, ``.weights.h5`` or legacy ``.h5``/``.hdf5``
        file whose weights are loaded into the new model.
      input_size: (H, W, C). H and W must be multiples of 2**depth, or None for a
        network that accepts any such size (inference at native resolution).
      width: filters of the first level; level k has width * 2**k. The seed uses 64.
      num_class: 1 gives the seed's sigmoid head, output (B, H, W, 1), probability of
        cell interior. N > 1 gives a 1x1 softmax head, output (B, H, W, N).
      depth: number of pooling steps (the seed uses 4).
      dropout: rate after the deepest encoder level and the bottleneck.
      learning_rate: Adam's learning rate.
      loss: overrides binary (or categorical) cross-entropy.
      compile: compile with Adam, the loss and accuracy.
      jit_compile: XLA compilation of the train/predict steps (True, False or "auto").
      head_activation: of the 2-filter 3x3 convolution before the sigmoid. The seed's
        "relu" can start dead: when both filters are negative on almost every pixel, the
        output is a constant and training never leaves it. "elu" has the same parameters
        and passes a gradient for negative inputs too.
      ema_momentum: keep an exponential moving average of the weights in the optimizer
        (Adam(use_ema=True)); ``isbi_unet.training.callback_set.make_callbacks`` then validates and saves it.
      sigmoid_outputs: with num_class 1, K > 1 independent sigmoid channels (e.g. one
        affinity per offset, see isbi_unet/training/affinities.py) after a head of 2K filters; output
        layer "affinities", (B, H, W, K). Pass a loss for them (accuracy is not tracked).

    Returns:
      A keras.Model mapping (B, H, W, C) floats in [0, 1] to (B, H, W, num_class),
      or (B, H, W, sigmoid_outputs).
    """
    if len(input_size) != 3:
        raise ValueError(f"input_size must be (H, W, C), got {tuple(input_size)}")
    if width < 1 or num_class < 1 or depth < 1 or sigmoid_outputs < 1:
        raise ValueError("width, num_class, depth and sigmoid_outputs must be positive")
    if num_class > 1 and sigmoid_outputs > 1:
        raise ValueError("sigmoid_outputs > 1 needs num_class 1")
    step = 2**depth
    for side in input_size[:2]:
        if side is not None and side % step:
            raise ValueError(
                f"input_size {tuple(input_size)}: H and W must be multiples of {step}"
            )

    inputs = keras.Input(shape=tuple(input_size), name="image")
    skips = []
    x = inputs
    for level in range(depth):
        x = conv_block(x, width * 2**level, name=f"down{level + 1}")
        if level == depth - 1 and dropout:
            x = layers.Dropout(dropout, name=f"down{level + 1}_dropout")(x)
        skips.append(x)
        x = layers.MaxPooling2D(pool_size=(2, 2), name=f"down{level + 1}_pool")(x)

    x = conv_block(x, width * 2**depth, name="bottleneck")
    if dropout:
        x = layers.Dropout(dropout, name="bottleneck_dropout")(x)

    for level in reversed(range(depth)):
        x = up_block(x, skips[level], width * 2**level, name=f"up{level + 1}")

    if num_class == 1:
        x = layers.Conv2D(2 * sigmoid_outputs, 3, activation=head_activation, padding="same",
                          kernel_initializer="he_normal", name="head_conv")(x)
        outputs = layers.Conv2D(sigmoid_outputs, 1, activation="sigmoid", dtype="float32",
                                name="probability" if sigmoid_outputs == 1 else "affinities")(x)
    else:
        outputs = layers.Conv2D(num_class, 1, activation="softmax", name="probability", dtype="float32")(x)

    model = keras.Model(inputs=inputs, outputs=outputs, name="unet")
    if pretrained_weights:  # before compile: a weights file's optimizer state, if any, stays behind
        load_weights_into(model, pretrained_weights)
    if compile:
        default_loss = "binary_crossentropy" if num_class == 1 else "categorical_crossentropy"
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate, use_ema=ema_momentum is not None,
                                            ema_momentum=ema_momentum or 0.99),
            loss=loss or default_loss,
            metrics=["accuracy"] if sigmoid_outputs == 1 else [],
            jit_compile=jit_compile,
        )
    return model


def load_weights_into(model: keras.Model, path: str | Path) -> None:
    """Load weights from a ``.keras``, ``.weights.h5`` or legacy ``.h5`` file.

    The file gives its network's weights only: a ``.keras`` model's optimizer state (the
    moments and step count of the run that trained it) stays behind, and ``unet`` loads
    before it compiles, so a ``.weights.h5`` file's optimizer state, or its lack of one,
    meets no optimizer; fine-tuning starts its own. Raises UserError when the file is
    missing or holds another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: weights file not found")

    def refuse(error: Exception) -> UserError:
        message = str(error)
        mismatch = re.search(r"variable\.shape=(\([^)]*\)), Received: value\.shape=(\([^)]*\))"
                             r"(?:\. Target variable: <Variable path=([\w/]+))?", message)
        if mismatch:  # Keras's message holds the whole array: keep the shapes
            here, there, name = mismatch.groups()
            message = f"{name or 'a weight'} is {there} there and {here} here"
        return UserError(
            f"{path}: cannot load these weights into a U-Net of width "
            f"{model.get_layer('down1_conv1').filters} with input {model.input_shape[1:]} "
            f"({message.splitlines()[0][:200]}); check --width, --depth and the input channels"
        )

    try:
        if path.suffix == ".keras":
            weights = keras.models.load_model(str(path), compile=False).get_weights()
            shapes, expected = [w.shape for w in weights], [w.shape for w in model.get_weights()]
            if shapes != expected:
                first = next((k for k, (a, b) in enumerate(zip(shapes, expected)) if a != b), min(len(shapes), len(expected)))
                raise ValueError(f"it holds {len(shapes)} weight arrays, this network {len(expected)}; the first "
                                 f"that differs, number {first + 1}, is {shapes[first] if first < len(shapes) else 'missing'} "
                                 f"there and {expected[first] if first < len(expected) else 'missing'} here")
            model.set_weights(weights)
        else:
            with warnings.catch_warnings(record=True) as caught:  # a refused file: Keras warns per layer first
                warnings.simplefilter("always")
                model.load_weights(str(path))
            for caught_warning in caught:  # loaded: let any warning through
                warnings.warn_explicit(caught_warning.message, caught_warning.category, caught_warning.filename,
                                       caught_warning.lineno)
    except (ValueError, KeyError, OSError, TypeError) as error:
        raise refuse(error) from error


