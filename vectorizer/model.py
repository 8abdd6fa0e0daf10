"""The multitask classifier: torchvision backbone, optional embedding layer, a head per task."""

from __future__ import annotations

import copy
import itertools
import logging
import re

import torch
import torch.nn.functional as functional
import torchvision
from torch import nn

from vectorizer.pretrained import IMAGENET_WEIGHTS

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """The model cannot be built as asked; the message names the config key."""


class TaskHeads(nn.Module):
    """One classifier per task. Their common input is the product vector."""

    def __init__(self, dim: int, classes_per_task: dict[str, int], head_type: str,
                 scale: float = 16.0) -> None:
        super().__init__()
        self.head_type = head_type
        self.task_names = list(classes_per_task)
        self.layers = nn.ModuleDict({
            module_key(task): nn.Linear(dim, count, bias=head_type == "linear")
            for task, count in classes_per_task.items()
        })
        self.scale = scale  # cosine heads: logits = scale x cosine (a softmax temperature)

    def forward(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.head_type == "cosine":
            unit = functional.normalize(vector, dim=1)
            return {task: self.scale * functional.linear(
                        unit, functional.normalize(self.layers[module_key(task)].weight, dim=1))
                    for task in self.task_names}
        return {task: self.layers[module_key(task)](vector) for task in self.task_names}


class MultiTaskNet(nn.Module):
    """uint8 images in, logits per task out; the vector is the input of `heads`."""

    def __init__(self, backbone: str, classes_per_task: dict[str, int], embedding_dim: int,
                 head_type: str, mean: tuple, std: tuple, head_scale: float = 16.0,
                 neck_hidden: int = 0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)
        self.backbone, feature_dim = build_backbone(backbone)
        self.feature_dim = feature_dim
        self.embedding = build_embedding(feature_dim, embedding_dim, neck_hidden)
        self.heads = TaskHeads(vector_width(embedding_dim, neck_hidden, feature_dim),
                               classes_per_task, head_type, head_scale)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        normalized = (images.float() - self.mean) / self.std
        return self.heads(self.embedding(self.backbone(normalized)))


def build_embedding(feature_dim: int, embedding_dim: int, hidden: int = 0) -> nn.Module:
    """The layers between the backbone and the heads (the neck): none, one linear layer, or,
    with `hidden` (`model.neck_hidden`), a `TwoPathNeck`."""
    if not embedding_dim:
        return nn.Identity()
    if hidden:
        return TwoPathNeck(feature_dim, embedding_dim, hidden)
    return linear_neck(feature_dim, embedding_dim)


def linear_neck(feature_dim: int, embedding_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(feature_dim, embedding_dim), nn.BatchNorm1d(embedding_dim))


class TwoPathNeck(nn.Module):
    """A product vector of two unit-length halves: a linear projection of the backbone's
    features, trained with the backbone, and a two-layer MLP's, fitted on the frozen features
    afterwards (`vectorizer.neck`). The linear half keeps what tells one product from another
    (a photo still finds its own product); the MLP half sharpens the classes. Until the MLP is
    fitted its half is zeros (the cosine heads then read the linear half alone)."""

    def __init__(self, feature_dim: int, embedding_dim: int, hidden: int) -> None:
        super().__init__()
        self.linear = linear_neck(feature_dim, embedding_dim)
        self.mlp = nn.Sequential(nn.Linear(feature_dim, hidden), nn.BatchNorm1d(hidden),
                                 nn.ReLU(), linear_neck(hidden, embedding_dim))
        self.register_buffer("mlp_fitted", torch.zeros((), dtype=torch.bool))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        linear = functional.normalize(self.linear(features), dim=1)
        mlp = functional.normalize(self.mlp(features), dim=1) if self.mlp_fitted \
            else torch.zeros_like(linear)
        return torch.cat([linear, mlp], dim=1)


def vector_width(embedding_dim: int, neck_hidden: int, feature_dim: int) -> int:
    """The product vector's width: the embedding, twice it with a two-path neck, or the
    backbone's own features without an embedding layer."""
    if not embedding_dim:
        return feature_dim
    return 2 * embedding_dim if neck_hidden else embedding_dim


def module_key(task: str) -> str:
    return re.sub(r"\W", "_", task)


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """A classification network without its final classifier, and the width of its output.

    EfficientNet-Lite comes from timm (the TF-padded variant, whose outputs equal the reference
    implementation of the registry's ImageNet weights); every other name from torchvision.
    """
    if name in IMAGENET_WEIGHTS:
        import timm  # only the EfficientNet-Lite family needs it

        network = timm.create_model(IMAGENET_WEIGHTS[name].timm_name, pretrained=False,
                                    num_classes=0)
        feature_dim = network.num_features
    else:
        available = torchvision.models.list_models(module=torchvision.models)
        if name not in available:
            allowed = [*IMAGENET_WEIGHTS, *available]
            raise ModelError(
                f"model.backbone: unknown backbone '{name}'; allowed: {', '.join(allowed)}")
        network = torchvision.models.get_model(name, weights=None)
        classifier_name, classifier = last_linear(network)
        parent_name, _, attribute = classifier_name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, attribute, nn.Identity())
        feature_dim = classifier.in_features
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1  # some models use 0.01, too slow for short runs
    return network, feature_dim


def backbone_stages(network: nn.Module) -> list[nn.Module]:
    """The backbone's stages from the input on: the stem first, then each block group."""
    if hasattr(network, "conv_stem") and hasattr(network, "blocks"):  # timm EfficientNet
        return [nn.ModuleList([network.conv_stem, network.bn1]), *network.blocks]
    if hasattr(network, "features") and isinstance(network.features, nn.Sequential):
        return list(network.features)  # torchvision MobileNet / EfficientNet
    if hasattr(network, "layer1"):  # torchvision ResNet
        return [nn.ModuleList([network.conv1, network.bn1]),
                *(getattr(network, f"layer{i}") for i in range(1, 5))]
    raise ModelError("training.freeze_stages: this backbone's stages are not known; set it to 0")


def freeze_stages(network: nn.Module, count: int) -> list[nn.Module]:
    """Stop gradients through the first `count` stages; returns them (keep them in eval mode)."""
    if count == 0:
        return []
    stages = backbone_stages(network)
    if count > len(stages):
        raise ModelError(f"training.freeze_stages: {count} is more than the backbone's "
                         f"{len(stages)} stages")
    for stage in stages[:count]:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
    return stages[:count]


class SmallMapDepthwiseConv(nn.Conv2d):
    """A depthwise convolution that pads in a separate step when its padding rivals the map.

    oneDNN's AVX2 kernels have no depthwise weight-gradient path for a padding that large (a 5x5
    kernel on EfficientNet-Lite's 3x3 maps at 96 px) and fall back to a gemm that took 480 ms of
    a 2.5 s training step on the AMD EPYC machine; padded first, the same convolution takes a
    third of the time. Same outputs and gradients; on larger maps the plain convolution is faster.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = self.padding
        if images.shape[-2] > 2 * pad_h and images.shape[-1] > 2 * pad_w:
            return super().forward(images)
        padded = functional.pad(images, (pad_w, pad_w, pad_h, pad_h))
        return functional.conv2d(padded, self.weight, self.bias, self.stride, 0,
                                 self.dilation, self.groups)


def pad_small_depthwise_maps(network: nn.Module) -> int:
    """Switch the zero-padded depthwise convolutions to `SmallMapDepthwiseConv` (for training);
    parameter names and the state_dict stay the same. Returns how many were switched."""
    switched = 0
    for module in network.modules():
        if (type(module) is nn.Conv2d and module.groups > 1
                and module.groups == module.in_channels and module.padding_mode == "zeros"
                and isinstance(module.padding, tuple) and any(module.padding)):
            module.__class__ = SmallMapDepthwiseConv
            switched += 1
    return switched


def folded_for_inference(model: MultiTaskNet, input_size: int) -> MultiTaskNet:
    """A copy of `model` with each BatchNorm folded into the convolution before it, for eval only.

    One pass over every feature map fewer: forward 1.28x faster on the AMD EPYC at 96 px. Checked
    on a probe batch: when the copy's vectors or logits differ (a network whose modules run in
    another order than they are declared), the original is returned.
    """
    folded = copy.deepcopy(model).eval()
    count = fold_conv_batchnorm(folded)
    probe = torch.randint(0, 256, (2, 3, input_size, input_size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    before, after = _vectors_and_logits(model.eval(), probe), _vectors_and_logits(folded, probe)
    if not all(torch.allclose(a, b, rtol=1e-3, atol=1e-4) for a, b in zip(before, after,
                                                                         strict=True)):
        log.warning("folding BatchNorm changed this model's outputs: kept unfolded")
        return model
    log.debug("folded %d BatchNorm layers into their convolutions", count)
    return folded


def fold_conv_batchnorm(network: nn.Module) -> int:
    """Fold every BatchNorm2d declared right after a Conv2d into it (eval statistics); the norm
    becomes its activation (timm's BatchNormAct2d) or nothing. Returns how many were folded."""
    count = 0
    for parent in list(network.modules()):
        children = list(parent.named_children())
        for (_, conv), (norm_name, norm) in itertools.pairwise(children):
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
                    and norm.track_running_stats):
                continue
            with torch.no_grad():
                scale = (norm.weight if norm.affine else 1.0) / torch.sqrt(
                    norm.running_var + norm.eps)
                shift = (norm.bias if norm.affine else 0.0) - norm.running_mean * scale
                bias = shift if conv.bias is None else conv.bias * scale + shift
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias, requires_grad=False)
            after = getattr(norm, "act", None)
            setattr(parent, norm_name, after if isinstance(after, nn.Module) else nn.Identity())
            count += 1
    return count


@torch.inference_mode()
def _vectors_and_logits(model: MultiTaskNet, images: torch.Tensor) -> list[torch.Tensor]:
    normalized = (images.float() - model.mean) / model.std
    vectors = model.embedding(model.backbone(normalized))
    return [vectors, *model.heads(vectors).values()]


def last_linear(network: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(name, module) for name, module in network.named_modules()
               if isinstance(module, nn.Linear)]
    if not linears:
        raise ModelError("model.backbone: this model has no Linear classifier to remove")
    return linears[-1]


class VectorHook:
    """Captures the input of one named module on every forward pass (the product vector)."""

    def __init__(self, model: nn.Module, layer_name: str) -> None:
        modules = dict(model.named_modules())
        if layer_name not in modules or not layer_name:
            valid = ", ".join(name for name in modules if name)
            raise ModelError(
                f"model.layer_to_get_input: no module named '{layer_name}'; valid names: {valid}")
        self.vector: torch.Tensor | None = None
        self._handle = modules[layer_name].register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, inputs: tuple, output: object) -> None:
        self.vector = inputs[0].flatten(1)

    def remove(self) -> None:
        self._handle.remove()
