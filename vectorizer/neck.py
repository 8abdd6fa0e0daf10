"""Fit the MLP half of a two-path neck, and fresh heads, on the frozen backbone's features.

After the backbone's epochs (`model.neck_hidden` > 0, `training.neck_epochs`), the best
checkpoint's backbone embeds every training image once, unaugmented; the MLP half of the neck
(`vectorizer.model.TwoPathNeck`) and fresh heads are then fitted on those features with the
linear half frozen. An epoch costs a few matrix products instead of a network, so the MLP trains
to convergence in about two minutes. README "The two-path neck".
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vectorizer.checkpoint import load_checkpoint, save_checkpoint
from vectorizer.model import TwoPathNeck

log = logging.getLogger(__name__)
NECK_BATCH = 256        # features are cheap: a larger batch than the images'
SEARCH_LINEAR_SHARE = 0.8  # the linear half's share of the vector's squared length in search
FEATURE_BATCH = 512
TIMED_STEPS = 5


def fitted_modules(model: nn.Module) -> list[nn.Module]:
    """What the refit trains: the MLP half of the neck and the heads."""
    return [model.embedding.mlp, model.heads]


def reset_fitted(model: nn.Module, seed: int) -> None:
    """Fresh weights (and BatchNorm statistics) for the MLP half and the heads; the MLP's half of
    the vector is switched on."""
    torch.manual_seed(seed)
    for part in fitted_modules(model):
        for module in part.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    model.embedding.mlp_fitted.fill_(True)


@torch.inference_mode()
def backbone_features(model: nn.Module, images: torch.Tensor, rows: torch.Tensor,
                      device: torch.device) -> torch.Tensor:
    """The backbone's pooled features of `rows` (uint8 images, unaugmented), in eval mode."""
    model.eval()
    parts = [torch.zeros(0, model.feature_dim)]
    for start in range(0, len(rows), FEATURE_BATCH):
        batch = images[rows[start:start + FEATURE_BATCH]].to(device)
        batch = batch.contiguous(memory_format=torch.channels_last)
        parts.append(model.backbone((batch.float() - model.mean) / model.std).float().cpu())
    return torch.cat(parts)


def neck_weights(trainer) -> list[float]:
    """Each task's loss weight in the neck's fit: `neck_weight`, or its `weight` without one."""
    return [task.neck_weight or task.weight for task in trainer.config.training.tasks]


def neck_step(trainer, model: nn.Module, optimizer: torch.optim.Optimizer,
              features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One optimizer step of the fitted parts on a batch of features."""
    loss = trainer.loss(model.heads(model.embedding(features)), targets, neck_weights(trainer))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss


def train_fitted(model: nn.Module) -> list[nn.Parameter]:
    """Train mode for the fitted parts, eval (frozen statistics) for the linear half; returns
    the parameters to optimise."""
    model.eval()
    for part in fitted_modules(model):
        part.train()
    return [p for part in fitted_modules(model) for p in part.parameters()]


def fit_neck(trainer, features: torch.Tensor, targets: torch.Tensor, epochs: int) -> float:
    """Fit the MLP half and the heads on `features` for `epochs`; returns the last loss."""
    config = trainer.config.training
    model = trainer.model
    optimizer = torch.optim.AdamW(train_fitted(model), lr=config.lr,
                                  weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(features) // NECK_BATCH)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    loss = torch.zeros(())
    for _ in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for step in range(steps_per_epoch):
            rows = order[step * NECK_BATCH:(step + 1) * NECK_BATCH]
            loss = neck_step(trainer, model, optimizer, features[rows].to(trainer.device),
                             targets[rows].to(trainer.device))
            schedule.step()
    return float(loss.detach())


def refit_neck(trainer) -> dict:
    """Fit trainer.model's MLP half and fresh heads on its backbone's features of the training
    images; returns what the checkpoint records (epochs, seconds, loss, validation scores)."""
    if not isinstance(trainer.model.embedding, TwoPathNeck):
        raise TypeError("refit_neck needs a model with a two-path neck (model.neck_hidden)")
    epochs = trainer.config.training.neck_epochs
    began = time.monotonic()
    rows = trainer.train_rows
    features = backbone_features(trainer.model, trainer.images, rows, trainer.device)
    reset_fitted(trainer.model, trainer.config.training.seed)
    loss = fit_neck(trainer, features, trainer.targets[rows], epochs)
    scores = trainer.validate()
    seconds = round(time.monotonic() - began, 1)
    log.info("neck: MLP half fitted on %d training images' features, %d epochs in %.0f s, "
             "loss %.3f", len(rows), epochs, seconds, loss)
    return {"epochs": epochs, "train_loss": loss, "val": scores, "seconds": seconds}


def search_scale(embedding_dim: int, linear_share: float = SEARCH_LINEAR_SHARE) -> list[float]:
    """Per-dimension weights of a two-path vector for search (the checkpoint's `vector_scale`,
    applied by the encoder after centring): the heads read both halves at equal length; the
    search gives the linear half `linear_share` of it, so that a photo finds its own product
    as often as the linear half alone lets it (README "The two-path neck")."""
    return ([math.sqrt(linear_share)] * embedding_dim
            + [math.sqrt(1.0 - linear_share)] * embedding_dim)


def fit_mlp_half(trainer, model_path: Path) -> None:
    """After the epochs: the best epoch's checkpoint, its MLP half and fresh heads fitted on its
    backbone's features, saved with the fit's record and the search weights of the halves."""
    model, meta = load_checkpoint(model_path)
    trainer.model.load_state_dict(model.state_dict())
    record = refit_neck(trainer)
    save_checkpoint(model_path, trainer.model, {
        **meta, "neck": record, "vector_scale": search_scale(trainer.config.model.embedding_dim),
        "metrics": {**meta.get("metrics", {}), "val": record["val"]}})


@dataclass(frozen=True)
class NeckCost:
    """What `refit_neck` will take: `images` embedded once (train and validation, at the eval
    pace the budget measures and re-measures each epoch) and `fit_seconds` for its epochs."""

    images: int = 0
    fit_seconds: float = 0.0

    def seconds(self, per_image: float) -> float:
        return self.images * per_image + self.fit_seconds


def neck_cost(trainer) -> NeckCost:
    """The neck's cost, its epochs timed on a few steps of a copy of the model; nothing
    without a two-path neck."""
    if not isinstance(trainer.model.embedding, TwoPathNeck):
        return NeckCost()
    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.AdamW(train_fitted(model), lr=1e-9)
    model.embedding.mlp_fitted.fill_(True)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(NECK_BATCH, model.feature_dim, generator=generator).to(trainer.device)
    targets = torch.zeros(NECK_BATCH, len(trainer.classes), dtype=torch.long,
                          device=trainer.device)
    seconds = []
    for _ in range(TIMED_STEPS + 1):
        began = time.perf_counter()
        neck_step(trainer, model, optimizer, features, targets)
        seconds.append(time.perf_counter() - began)
    steps = trainer.config.training.neck_epochs * max(1, len(trainer.train_rows) // NECK_BATCH)
    return NeckCost(len(trainer.train_rows) + len(trainer.val_rows),
                    steps * statistics.median(seconds[1:]))
