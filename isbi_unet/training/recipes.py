"""Training recipes: everything that defines a training run but the data.

``RECIPES`` holds the blog's exact recipe, one sized for a 2-core CPU, the paper's
training for a GPU, and one that fine-tunes a trained model on a few slices; ``resolve_recipe("auto")`` picks by hardware. ``set_precision``
sets Keras's global dtype policy for a recipe's precision.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import keras

from isbi_unet.errors import UserError
from isbi_unet.hardware import cpu_has_bfloat16, has_gpu
from isbi_unet.network import PRECISION_POLICIES

# The blog's augmentation, with the meaning it was written for.
BLOG_AUG_DICT = dict(
    rotation_range=0.2,
    width_shift_range=0.05,
    height_shift_range=0.05,
    shear_range=0.05,
    zoom_range=0.05,
    horizontal_flip=True,
    fill_mode="nearest",
)

NATIVE_AUG_DICT = dict(
    rotation_range=10.0,
    width_shift_range=0.05,
    height_shift_range=0.05,
    shear_range=5.0,
    zoom_range=0.1,
    horizontal_flip=True,
    vertical_flip=True,
    rot90=True,
    fill_mode="reflect",
)


@dataclass(frozen=True)
class Recipe:
    """Everything that defines a training run but the data.

    ``patch_size`` set: train on random crops of native-resolution slices and validate on
    whole slices. ``target_size`` set instead: the seed's way, every slice resized.
    ``time_limit_minutes`` stops training early when the next epoch would not fit.
    ``weighted_loss`` trains with the paper's border-weighted cross-entropy.
    ``monitor`` picks the best checkpoint: "val_loss" (the seed's choice) or the ISBI
    "val_v_rand" / "val_v_info" of the held-out slices. ``jit_compile``: XLA (True),
    none (False), or Keras's choice ("auto"). ``head_activation``: of the 2-filter
    convolution before the sigmoid ("relu" in the seed; see model.unet).
    ``depth``: pooling steps of the U-Net (the seed's 4; 5 doubles its receptive field,
    and crops and selection slices must then be multiples of 32).
    ``ema_momentum``: validate, checkpoint and keep an exponential moving average of the
    weights (None or 0: the raw weights, as the seed did). ``target``: "membrane" (the
    seed's single sigmoid) or "affinities" (one sigmoid per offset of
    affinities.DEFAULT_OFFSETS, computed from each augmented crop; see isbi_unet/training/affinities.py).
    """

    name: str
    epochs: int
    steps_per_epoch: int
    batch_size: int
    width: int = 64
    depth: int = 4
    learning_rate: float = 1e-4
    aug_dict: dict = field(default_factory=dict)
    patch_size: tuple[int, int] | None = (256, 256)
    target_size: tuple[int, int] | None = None
    precision: str = "float32"
    time_limit_minutes: float | None = None
    early_stopping_patience: int = 5
    reduce_lr_patience: int = 2
    weighted_loss: bool = False
    monitor: str = "val_loss"
    jit_compile: bool | str = "auto"
    head_activation: str = "relu"
    ema_momentum: float | None = None
    target: str = "membrane"

    def replace(self, **changes) -> "Recipe":
        """A copy with some fields changed (None values are ignored)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


JIT_CHOICES = {"on": True, "off": False, "auto": "auto"}


def jit_compile_option(choice: str | None) -> bool | str | None:
    """A ``--jit-compile`` choice (on, off, auto) as Recipe.jit_compile; None stays None."""
    return None if choice is None else JIT_CHOICES[choice]


RECIPES = {
    # The blog, exactly: batch 2, 2000 steps, 20 epochs, its aug dict, resized to 256x256.
    "blog": Recipe("blog", epochs=20, steps_per_epoch=2000, batch_size=2, width=64,
                   learning_rate=1e-4, aug_dict=BLOG_AUG_DICT, patch_size=None,
                   target_size=(256, 256)),
    # Sized for a 2-core CPU: a narrower network in bfloat16 on native-resolution crops with
    # the paper's elastic deformation (chosen on 6 folds, README), at most 20 minutes.
    "cpu": Recipe("cpu", epochs=40, steps_per_epoch=100, batch_size=4, width=16,
                  learning_rate=1e-3, aug_dict=dict(NATIVE_AUG_DICT, elastic_sigma=10.0), precision="mixed",
                  weighted_loss=True, time_limit_minutes=20.0, early_stopping_patience=10,
                  reduce_lr_patience=4, head_activation="elu", ema_momentum=0.99),
    # The paper's training on top of the seed network: native-resolution crops, elastic
    # deformation (3x3 grid, 10 px) and the border-weighted loss. Meant for a GPU.
    "paper": Recipe("paper", epochs=40, steps_per_epoch=250, batch_size=4, width=64,
                    learning_rate=1e-4, aug_dict=dict(NATIVE_AUG_DICT, elastic_sigma=10.0),
                    weighted_loss=True, precision="mixed", early_stopping_patience=8,
                    reduce_lr_patience=3, head_activation="elu", ema_momentum=0.99),
    # Fine-tuning a trained model (--pretrained) on a few labelled slices of one's own:
    # the cpu recipe's network and augmentation, a tenth of its learning rate, 200 steps.
    "finetune": Recipe("finetune", epochs=10, steps_per_epoch=20, batch_size=4, width=16,
                       learning_rate=1e-4, aug_dict=dict(NATIVE_AUG_DICT, elastic_sigma=10.0), precision="mixed",
                       weighted_loss=True, time_limit_minutes=20.0, early_stopping_patience=5,
                       reduce_lr_patience=2, head_activation="elu", ema_momentum=0.99),
}

NEEDS_PRETRAINED: tuple[str, ...] = ("finetune",)  # recipes that start from --pretrained weights


def resolve_recipe(name: str = "auto") -> Recipe:
    """A recipe by name; "auto" is "blog" on a GPU and "cpu" otherwise."""
    if name == "auto":
        name = "blog" if has_gpu() else "cpu"
    if name not in RECIPES:
        raise UserError(f"unknown recipe {name!r}; choose one of auto, {', '.join(RECIPES)}")
    return RECIPES[name]


def set_precision(precision: str) -> str:
    """Set Keras's global dtype policy: "float32", "bfloat16"/"float16" (mixed), or
    "mixed": float16 on a GPU, bfloat16 on a CPU that computes it natively
    (cpu_has_bfloat16), float32 on other CPUs. Returns the policy name."""
    policies = PRECISION_POLICIES
    if precision == "mixed":
        precision = "float16" if has_gpu() else "bfloat16" if cpu_has_bfloat16() else "float32"
    if precision not in policies:
        raise UserError(f"--precision must be float32, mixed, bfloat16 or float16, not {precision!r}")
    keras.mixed_precision.set_global_policy(policies[precision])
    return policies[precision]
