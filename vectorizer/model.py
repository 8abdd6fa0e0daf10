"""The multitask classifier: torchvision backbone, optional embedding layer, a head per task."""

from __future__ import annotations

import logging
import re

import torch
import torch.nn.functional as functional
import torchvision
from torch import nn

log = logging.getLogger(__name__)


class ModelError(ValueError):
    """The model cannot be built as asked; the message names the config key."""


class TaskHeads(nn.Module):
    """One classifier per task. Their common input is the product vector."""

    def __init__(self, dim: int, classes_per_task: dict[str, int], head_type: str) -> None:
        super().__init__()
        self.head_type = head_type
        self.task_names = list(classes_per_task)
        self.layers = nn.ModuleDict({
            module_key(task): nn.Linear(dim, count, bias=head_type == "linear")
            for task, count in classes_per_task.items()
        })
        self.scale = 16.0

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
                 head_type: str, mean: tuple, std: tuple) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)
        self.backbone, feature_dim = build_backbone(backbone)
        if embedding_dim:
            self.embedding = nn.Sequential(nn.Linear(feature_dim, embedding_dim),
                                           nn.BatchNorm1d(embedding_dim))
        else:
            self.embedding = nn.Identity()
        self.heads = TaskHeads(embedding_dim or feature_dim, classes_per_task, head_type)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        normalized = (images.float() - self.mean) / self.std
        return self.heads(self.embedding(self.backbone(normalized)))


def module_key(task: str) -> str:
    return re.sub(r"\W", "_", task)


def build_backbone(name: str) -> tuple[nn.Module, int]:
    """A torchvision classification model with its final classifier replaced by Identity."""
    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise ModelError(
            f"model.backbone: unknown backbone '{name}'; allowed: {', '.join(available)}")
    network = torchvision.models.get_model(name, weights=None)
    classifier_name, classifier = last_linear(network)
    parent_name, _, attribute = classifier_name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    setattr(parent, attribute, nn.Identity())
    for module in network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = 0.1  # some models use 0.01, too slow for short from-scratch runs
    return network, classifier.in_features


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


def load_pretrained_backbone(model: MultiTaskNet, backbone: str, weights: str | None) -> str:
    """Load ImageNet weights from a file or torch's cache; offline, fall back to random init."""
    if not weights:
        return "random init"
    path = weights
    if weights == "imagenet":
        from pathlib import Path
        default = torchvision.models.get_model_weights(backbone).DEFAULT
        path = str(Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        log.warning("model.pretrained_weights: %s not found (offline?); training from random init",
                    path)
        return "random init (weights not found)"
    kept = {key: value for key, value in state.items()
            if key in model.backbone.state_dict()
            and model.backbone.state_dict()[key].shape == value.shape}
    model.backbone.load_state_dict(kept, strict=False)
    log.info("loaded %d pretrained tensors from %s", len(kept), path)
    return f"pretrained: {path}"
