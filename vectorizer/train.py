"""Train the multitask classifier: `python -m vectorizer.train --config CFG [--epochs N]`."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as functional
from sklearn.metrics import f1_score
from tqdm import tqdm

from config import AppConfig, ConfigError, load_config
from ingest.catalog import CatalogError, load_catalog, localize_images
from util.files import atomic_path
from vectorizer.augment import augment
from vectorizer.budget import BudgetError, Plan, plan_run, replan_after_epoch
from vectorizer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from vectorizer.dataset import load_all
from vectorizer.device import (
    autocast,
    keep_freed_memory,
    pick_device,
    resolve_precision,
    set_threads,
)
from vectorizer.encoder import Encoder
from vectorizer.labels import catalog_checksum, class_lists, encode_labels, split_ids
from vectorizer.model import ModelError, MultiTaskNet, freeze_stages, pad_small_depthwise_maps
from vectorizer.neck import NeckCost, fit_mlp_half
from vectorizer.preprocess import Preprocess
from vectorizer.pretrained import PretrainedError, load_into, normalisation

log = logging.getLogger(__name__)
MEAN_SAMPLE = 8192  # training images whose mean vector centres the index


def model_identity(config: AppConfig, items: pd.DataFrame) -> dict:
    """What a checkpoint must match to be reused for this config: catalog, tasks, architecture."""
    return {
        "catalog_checksum": catalog_checksum(items, config.task_columns),
        "tasks": [task.model_dump() for task in config.training.tasks],
        "backbone": config.model.backbone,
        "input_size": config.model.input_size,
        "embedding_dim": config.model.embedding_dim,
        **({"neck_hidden": config.model.neck_hidden} if config.model.neck_hidden else {}),
        "head_type": config.model.head_type,
        **({"head_scale": config.model.head_scale} if config.model.head_scale != 16.0 else {}),
        **({"trim_border": True} if config.model.trim_border else {}),  # older models lack it
        **({"pretrained_weights": config.model.pretrained_weights}
           if config.model.pretrained_weights else {}),
    }


def stored_identity(path: Path) -> dict | None:
    try:
        meta = torch.load(path, map_location="cpu", weights_only=True)["meta"]
    except Exception:
        return None
    return meta.get("identity")


class Trainer:
    """Holds the data, the model and the optimiser for one training run."""

    mean_sample = MEAN_SAMPLE
    neck_cost = NeckCost()  # what the time budget keeps for the neck's fit (vectorizer.budget)

    def __init__(self, config: AppConfig, items: pd.DataFrame, epochs: int, progress: bool):
        self.config, self.items, self.max_epochs, self.progress = config, items, epochs, progress
        training = config.training
        self.device = pick_device()
        self.precision = resolve_precision(config.model.precision, self.device)
        torch.manual_seed(training.seed)
        self.generator = torch.Generator().manual_seed(training.seed)
        self.classes, self.rare_report = class_lists(items, training.tasks)
        self.targets = torch.from_numpy(encode_labels(items, self.classes))
        self.split = split_ids(items, training)
        mean, std = normalisation(config.model.backbone)
        self.preprocess = Preprocess(config.model.input_size, mean=mean, std=std,
                                     trim_border=config.model.trim_border)
        self.images, self.failed = self.load_images()
        self.train_rows = self.rows_of("train")
        self.val_rows = self.rows_of("val")
        self.weights = [task.weight for task in training.tasks]
        self.model = MultiTaskNet(
            config.model.backbone, {task: len(names) for task, names in self.classes.items()},
            config.model.embedding_dim, config.model.head_type,
            self.preprocess.mean, self.preprocess.std, config.model.head_scale,
            config.model.neck_hidden)
        self.init_note = load_into(self.model.backbone, config.model.backbone,
                                   config.model.pretrained_weights)
        self.frozen = freeze_stages(self.model.backbone, training.freeze_stages)
        pad_small_depthwise_maps(self.model)  # a faster weight gradient on AVX2 CPUs
        self.model.to(self.device, memory_format=torch.channels_last)
        self.steps_per_epoch = max(1, len(self.train_rows) // config.model.batch_size)
        groups = parameter_groups(self.model, training.lr, training.backbone_lr_factor)
        self.optimizer = torch.optim.AdamW(groups, weight_decay=training.weight_decay)
        self.peak_lrs = [group["lr"] for group in groups]
        self.plan = Plan(epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.scheduler = None

    def schedule(self, plan: Plan, done_steps: int = 0) -> None:
        """One-cycle learning rates over the planned steps, moved on past those already done."""
        self.plan = plan
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=self.peak_lrs, total_steps=plan.steps, pct_start=0.2)
        with warnings.catch_warnings():  # moving on without optimizer steps is the point here
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(done_steps):
                self.scheduler.step()

    def train_mode(self) -> None:
        """Train mode, except the frozen stages: their BatchNorm statistics stay as loaded."""
        self.model.train()
        for stage in self.frozen:
            stage.eval()

    def load_images(self) -> tuple[torch.Tensor, dict[str, str]]:
        paths, reasons = localize_images(self.items, self.config)
        tensor, decode_reasons = load_all(
            paths, self.preprocess, batch_size=256, workers=self.config.model.num_workers,
            max_pixels=self.config.download.max_pixels,
            progress="decode images" if self.progress else None)
        failed = {item_id: reason or decode_reason for item_id, reason, decode_reason
                  in zip(self.items["id"], reasons, decode_reasons, strict=True)
                  if reason or decode_reason}
        if failed:
            log.warning("%d images skipped (unreadable); e.g. %s", len(failed),
                        next(iter(failed.items())))
        return tensor, failed

    def rows_of(self, part: str) -> torch.Tensor:
        wanted = set(self.split[part]) - set(self.failed)
        return torch.tensor([row for row, item_id in enumerate(self.items["id"])
                             if item_id in wanted], dtype=torch.long)

    def loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor,
             weights: list[float] | None = None) -> torch.Tensor:
        total = torch.zeros((), device=self.device)
        for column, (task, weight) in enumerate(zip(self.classes, weights or self.weights,
                                                     strict=True)):
            target = targets[:, column]
            if (target >= 0).any():
                total = total + weight * functional.cross_entropy(
                    logits[task].float(), target, ignore_index=-1,
                    label_smoothing=self.config.training.label_smoothing)
        return total

    def step(self, model: MultiTaskNet, optimizer: torch.optim.Optimizer, rows: torch.Tensor,
             generator: torch.Generator) -> float:
        """One optimizer step on the (augmented) images of `rows`; returns the loss."""
        images = self.images[rows]
        if self.config.training.augment:
            images = augment(images, generator, self.config.training.augment,
                             self.config.training.warp_share)
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            loss = self.loss(model(images), self.targets[rows].to(self.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    def train_epoch(self, epoch: int) -> float:
        self.train_mode()
        batch_size = self.config.model.batch_size
        order = self.train_rows[torch.randperm(len(self.train_rows), generator=self.generator)]
        losses = []
        bar = tqdm(range(self.plan.steps_in(epoch)), desc=f"epoch {epoch + 1}/{self.plan.epochs}",
                   disable=not self.progress, unit="batch")
        for step in bar:
            rows = order[step * batch_size:(step + 1) * batch_size]
            losses.append(self.step(self.model, self.optimizer, rows, self.generator))
            self.scheduler.step()
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        return float(np.mean(losses)) if losses else math.nan

    @torch.inference_mode()
    def predict(self, model: MultiTaskNet, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class predictions per task for `rows`, in eval mode."""
        model.eval()
        predictions = {task: [] for task in self.classes}
        for start in range(0, len(rows), 512):
            images = self.images[rows[start:start + 512]].to(self.device)
            images = images.contiguous(memory_format=torch.channels_last)
            with autocast(self.device, self.precision):
                logits = model(images)
            for task in self.classes:
                predictions[task].append(logits[task].float().argmax(1).cpu())
        return {task: torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
                for task, parts in predictions.items()}

    def validate(self) -> dict[str, dict[str, float]]:
        predictions = self.predict(self.model, self.val_rows)
        return {task: task_scores(predictions[task], self.targets[self.val_rows, i])
                for i, task in enumerate(self.classes)}

    def meta(self, history: list[dict]) -> dict:
        return {
            "backbone": self.config.model.backbone,
            "preprocess": self.preprocess.to_dict(),
            "embedding_dim": self.config.model.embedding_dim,
            "neck_hidden": self.config.model.neck_hidden,
            "head_type": self.config.model.head_type,
            "head_scale": self.config.model.head_scale,
            "layer_to_get_input": self.config.model.layer_to_get_input,
            "tasks": self.classes,
            "rare_classes": self.rare_report,
            "training": self.config.training.model_dump(),
            "init": self.init_note,
            "pretrained_weights": self.config.model.pretrained_weights,
            "precision": self.precision,
            "split": {**self.split, "strategy": split_strategy(self.config)},
            "skipped_images": self.failed,
            "history": history,
            "plan": self.plan.to_dict(),
            "metrics": history[-1] if history else {},
            "catalog_checksum": catalog_checksum(self.items, self.config.task_columns),
            "identity": model_identity(self.config, self.items),
        }


def parameter_groups(model: MultiTaskNet, lr: float, backbone_factor: float) -> list[dict]:
    """The trainable backbone at lr * backbone_factor, the embedding and heads at lr."""
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    rest = [p for name, p in model.named_parameters()
            if not name.startswith("backbone.") and p.requires_grad]
    return [{"params": backbone, "lr": lr * backbone_factor}, {"params": rest, "lr": lr}]


def split_strategy(config: AppConfig) -> str:
    columns = config.training.variant_strip_columns
    if columns:
        return (f"grouped by design: names with their {', '.join(columns)} words removed; "
                "variants of one design fall in the same part")
    return "by product id (variants of one design may straddle parts)"


def task_scores(predicted: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    known = target >= 0
    if not known.any():
        return {"accuracy": math.nan, "macro_f1": math.nan}
    predicted, target = predicted[known].numpy(), target[known].numpy()
    return {"accuracy": float((predicted == target).mean()),
            "macro_f1": float(f1_score(target, predicted, average="macro", zero_division=0))}


def mean_accuracy(scores: dict[str, dict[str, float]]) -> float:
    values = [s["accuracy"] for s in scores.values() if not math.isnan(s["accuracy"])]
    return float(np.mean(values)) if values else 0.0


def resume_path(model_path: Path) -> Path:
    return model_path.with_name(model_path.name + ".resume")


def train(config: AppConfig, *, epochs: int | None = None, limit: int | None = None,
          fresh: bool = False, progress: bool = True,
          clock: Callable[[], float] = time.monotonic) -> dict:
    """Train, keep the best checkpoint by mean validation accuracy, and return its meta."""
    started = clock()  # the budget counts the whole command, catalog loading included
    set_threads(config.model.num_threads)
    keep_freed_memory()
    items = load_catalog(config)
    if limit:
        items = items.sample(n=min(limit, len(items)), random_state=config.training.seed)
        items = items.sort_index().reset_index(drop=True)
    epochs = epochs or config.training.epochs
    trainer = Trainer(config, items, epochs, progress)
    model_path = Path(config.paths.trained_model_path)
    state = load_resume(resume_path(model_path), trainer) if not fresh else None
    start, history, best, deadline = 0, [], -1.0, None
    if state:  # a resumed run keeps its plan
        start, history, best = state["epoch"], state["history"], state["best"]
        stored = Plan.from_dict(state["plan"])
        trainer.schedule(stored, done_steps=stored.steps_before(start))
    else:
        budget = config.training.max_minutes
        deadline = started + 60 * budget if budget else None
        trainer.schedule(plan_run(trainer, deadline))
    epoch = start
    while epoch < trainer.plan.epochs:
        began = clock()
        train_loss = trainer.train_epoch(epoch)
        trained = clock()
        scores = trainer.validate()
        record = {"epoch": epoch + 1, "train_loss": train_loss, "val": scores,
                  "seconds": round(clock() - began, 1)}
        history.append(record)
        log.info("epoch %d: loss %.3f, val %s", epoch + 1, train_loss, format_scores(scores))
        if deadline is not None:
            replan_after_epoch(trainer, epoch + 1, trained - began, clock() - trained,
                               seconds_left=deadline - clock())
        if mean_accuracy(scores) > best:
            best = mean_accuracy(scores)
            save_checkpoint(model_path, trainer.model, {**trainer.meta(history), "best": record})
        save_resume(resume_path(model_path), trainer, epoch + 1, history, best)
        epoch += 1
    if config.model.neck_hidden:
        fit_mlp_half(trainer, model_path)
    resume_path(model_path).unlink(missing_ok=True)
    return add_vector_mean(model_path, trainer.images, trainer.train_rows)


def add_vector_mean(model_path: Path, images: torch.Tensor, rows: torch.Tensor) -> dict:
    """Store the mean training vector in the checkpoint; the encoder subtracts it.

    Penultimate features are mostly non-negative, so raw cosine distances crowd near 0;
    centring spreads them over their range and makes the similarity bands meaningful.
    """
    model, meta = load_checkpoint(model_path)
    encoder = Encoder(model, {**meta, "vector_mean": None}, "", "fp32")
    if len(rows) > MEAN_SAMPLE:  # an evenly spread sample estimates the mean to ~1e-3
        rows = rows[torch.linspace(0, len(rows) - 1, MEAN_SAMPLE).long()]
    sums, count = None, 0
    for start in range(0, len(rows), 512):
        batch = images[rows[start:start + 512]]
        with torch.inference_mode():
            encoder.model(batch.contiguous(memory_format=torch.channels_last))
            raw = encoder.hook.vector.float().sum(0)
        sums = raw if sums is None else sums + raw
        count += len(batch)
    meta["vector_mean"] = (sums / max(count, 1)).tolist() if sums is not None else None
    save_checkpoint(model_path, model, meta)
    return meta


def format_scores(scores: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{task} acc {s['accuracy']:.3f} f1 {s['macro_f1']:.3f}"
                     for task, s in scores.items())


def save_resume(path: Path, trainer: Trainer, epoch: int, history: list, best: float) -> None:
    with atomic_path(path) as temporary:
        torch.save({"identity": model_identity(trainer.config, trainer.items), "epoch": epoch,
                    "epochs": trainer.max_epochs, "plan": asdict(trainer.plan),
                    "history": history, "best": best,
                    "model": trainer.model.state_dict(),
                    "optimizer": trainer.optimizer.state_dict(),
                    "generator": trainer.generator.get_state(),
                    "torch_rng": torch.get_rng_state()}, temporary)  # dropout draws from it


def load_resume(path: Path, trainer: Trainer) -> dict | None:
    """Continue an interrupted run of the same config and catalog; anything else starts afresh."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    planned = state.get("plan", {})
    if (state.get("identity") != model_identity(trainer.config, trainer.items)
            or state.get("epochs") != trainer.max_epochs
            or planned.get("steps_per_epoch") != trainer.steps_per_epoch
            or planned.get("max_minutes") != trainer.config.training.max_minutes):
        log.info("ignoring %s: it belongs to another config or catalog", path)
        return None
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.generator.set_state(state["generator"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    log.info("resuming from epoch %d (%s)", state["epoch"] + 1, path)
    return state


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vectorizer.train", description=__doc__)
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override training.epochs")
    parser.add_argument("--limit", type=int, default=None, help="train on N sampled items")
    parser.add_argument("--fresh", action="store_true", help="ignore an interrupted run")
    parser.add_argument("--if-missing", action="store_true",
                        help="skip when the checkpoint already fits this catalog and tasks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(args.config)
        model_path = Path(config.paths.trained_model_path)
        if args.if_missing and model_path.is_file():
            identity = model_identity(config, load_catalog(config))
            if stored_identity(model_path) == identity:
                print(f"model up to date: {model_path}")
                return 0
            print(f"{model_path} was trained for another catalog or tasks: retraining")
        meta = train(config, epochs=args.epochs, limit=args.limit, fresh=args.fresh)
    except (BudgetError, ConfigError, CatalogError, CheckpointError, ModelError,
            PretrainedError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    best = meta.get("best", {})
    print(f"saved {config.paths.trained_model_path}: best epoch {best.get('epoch')}, "
          f"{format_scores(best.get('val', {}))}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
