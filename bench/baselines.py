"""Baselines for bench/embeddings.py: frozen ImageNet features, single-task, autoencoder."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as functional
from torch import nn
from tqdm import tqdm

from config.schema import AppConfig
from vectorizer.augment import augment
from vectorizer.budget import Plan
from vectorizer.encoder import Encoder
from vectorizer.model import build_backbone
from vectorizer.neck import refit_neck, search_scale
from vectorizer.pretrained import load_into, normalisation
from vectorizer.train import Trainer

log = logging.getLogger(__name__)


def single_task_config(config: AppConfig, task: str) -> AppConfig:
    """The same config and recipe with only `task` trained (the split does not depend on tasks)."""
    tasks = [t for t in config.training.tasks if t.column == task]
    training = config.training.model_copy(update={"tasks": tasks})
    return config.model_copy(update={"training": training})


def train_single_task(config: AppConfig, items, task: str, epochs: int,
                      steps: int | None = None) -> tuple[Trainer, dict]:
    """Train the backbone on `task` alone with the multitask recipe for `steps` optimizer steps
    (default: `epochs` whole epochs), then fit a two-path neck's MLP half as the recipe does;
    the last epoch is kept."""
    trainer = Trainer(single_task_config(config, task), items, epochs, progress=True)
    trainer.schedule(Plan(steps or trainer.plan.steps, trainer.steps_per_epoch))
    began, history = time.perf_counter(), []
    for epoch in range(trainer.plan.epochs):
        loss = trainer.train_epoch(epoch)
        scores = trainer.validate()
        history.append({"epoch": epoch + 1, "loss": loss, "val": scores})
        log.info("single-task epoch %d: loss %.3f, val %s", epoch + 1, loss, scores)
    if config.model.neck_hidden:
        history.append({"neck": refit_neck(trainer)})
    return trainer, {"seconds": round(time.perf_counter() - began, 1), "history": history}


def single_task_encoder(trainer: Trainer) -> Encoder:
    meta = trainer.meta([])
    if trainer.config.model.neck_hidden:  # the halves weighted for search, as `train` saves them
        meta["vector_scale"] = search_scale(trainer.config.model.embedding_dim)
    return Encoder(trainer.model, meta, "", "fp32")


class ConvAutoencoder(nn.Module):
    """Four stride-2 convolutions to a 512-d bottleneck and back (64x64 input)."""

    def __init__(self, size: int = 64, bottleneck: int = 512) -> None:
        super().__init__()
        if size % 16:
            raise ValueError(f"the autoencoder needs an input size divisible by 16, got {size}")
        widths = [3, 32, 64, 128, 256]
        self.side = size // 16
        down = []
        for a, b in itertools.pairwise(widths):
            down += [nn.Conv2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.encoder = nn.Sequential(*down, nn.Flatten(),
                                     nn.Linear(256 * self.side * self.side, bottleneck))
        up = []
        for a, b in itertools.pairwise(widths[:0:-1]):
            up += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.decoder_input = nn.Linear(bottleneck, 256 * self.side * self.side)
        self.decoder = nn.Sequential(*up, nn.ConvTranspose2d(32, 3, 4, 2, 1))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images / 127.5 - 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.decoder_input(self.encode(images)).view(-1, 256, self.side, self.side)
        return torch.tanh(self.decoder(hidden))


def train_autoencoder(images: torch.Tensor, rows: torch.Tensor, *, epochs: int, batch_size: int,
                      seed: int, augmented: Sequence[str], warp_share: float = 1.0,
                      lr: float = 2e-3
                      ) -> tuple[ConvAutoencoder, dict]:
    """Reconstruction (MSE) training on the same training rows and epochs as the classifiers."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = ConvAutoencoder(images.shape[-1]).to(memory_format=torch.channels_last)
    steps = max(1, len(rows) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                    total_steps=steps * epochs, pct_start=0.2)
    began, losses_per_epoch = time.perf_counter(), []
    for epoch in range(epochs):
        model.train()
        order = rows[torch.randperm(len(rows), generator=generator)]
        losses = []
        bar = tqdm(range(steps), desc=f"autoencoder {epoch + 1}/{epochs}", unit="batch")
        for step in bar:
            batch = images[order[step * batch_size:(step + 1) * batch_size]]
            batch = (augment(batch, generator, augmented, warp_share) if augmented
                     else batch.float())
            batch = batch.contiguous(memory_format=torch.channels_last)
            loss = functional.mse_loss(model(batch), batch / 127.5 - 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        losses_per_epoch.append(float(np.mean(losses)))
        log.info("autoencoder epoch %d: mse %.4f", epoch + 1, losses_per_epoch[-1])
    return model.eval(), {"seconds": round(time.perf_counter() - began, 1),
                          "mse": losses_per_epoch}


@torch.inference_mode()
def autoencoder_vectors(model: ConvAutoencoder, images: torch.Tensor, batch: int = 512
                        ) -> np.ndarray:
    return np.concatenate([model.encode(images[i:i + batch].float()).numpy()
                           for i in range(0, len(images), batch)])


@torch.inference_mode()
def frozen_imagenet_vectors(backbone: str, images: torch.Tensor, batch: int = 256
                            ) -> np.ndarray:
    """Pooled features of the backbone with its ImageNet weights and no training at all."""
    network, _ = build_backbone(backbone)
    load_into(network, backbone, "imagenet")
    network = network.eval().to(memory_format=torch.channels_last)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in normalisation(backbone))
    return np.concatenate([
        network(((images[i:i + batch].float() - mean) / std).contiguous(
            memory_format=torch.channels_last)).numpy()
        for i in range(0, len(images), batch)])
