"""Embedding comparison on the real catalog: mAP@5 per task of our vector against baselines."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as functional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import exact_top, split_rows

from config import load_config
from index_store.evaluate import retrieval_metrics
from ingest.catalog import load_catalog
from vectorizer.dataset import load_all
from vectorizer.device import keep_freed_memory
from vectorizer.encoder import Encoder


def unit(matrix: np.ndarray) -> np.ndarray:
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    return (centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)).astype(
        np.float32)


def in_chunks(function, images: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """`function` over slices of `images`: a whole-catalog float or int64 copy would take
    4-8 GB (the int64 histogram codes of 37k images alone: 8 GB)."""
    return np.concatenate([function(images[i:i + chunk]) for i in range(0, len(images), chunk)])


def raw_pixels(images: torch.Tensor, side: int = 16) -> np.ndarray:
    """The padded image downscaled to side x side RGB, flattened (768 values at 16 px)."""
    return in_chunks(lambda part: functional.adaptive_avg_pool2d(part.float(), side)
                     .flatten(1).numpy(), images)


def colour_histogram(images: torch.Tensor, bins: int = 8) -> np.ndarray:
    """An 8x8x8 RGB histogram of the non-background (not near-white) pixels."""
    return in_chunks(lambda part: _histograms(part, bins), images)


def _histograms(images: torch.Tensor, bins: int) -> np.ndarray:
    pixels = images.permute(0, 2, 3, 1).reshape(len(images), -1, 3).long()
    foreground = pixels.amin(dim=2) < 235
    codes = (pixels // (256 // bins)) @ torch.tensor([bins * bins, bins, 1])
    histograms = torch.zeros(len(images), bins ** 3)
    histograms.scatter_add_(1, codes, foreground.float())
    return (histograms / histograms.sum(1, keepdim=True).clamp(min=1)).sqrt().numpy()


def our_vectors(encoder: Encoder, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    return np.concatenate([encoder.forward(images[i:i + batch])[0]
                           for i in range(0, len(images), batch)])


def evaluate(name: str, vectors: np.ndarray, query_rows, pool_rows, items, k, tasks) -> dict:
    matrix = unit(vectors)
    found = exact_top(matrix[query_rows], matrix[pool_rows], k)
    labels = items[tasks]
    metrics = retrieval_metrics(labels.iloc[query_rows].reset_index(drop=True), found,
                                labels.iloc[pool_rows].reset_index(drop=True), tasks, k)
    return {"method": name, "dim": int(vectors.shape[1]),
            **{task: round(metrics[task]["map_at_k"], 4) for task in tasks}}


def frozen_row(backbone: str, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Frozen ImageNet features of the same backbone, where the registry ships its weights."""
    from bench.baselines import frozen_imagenet_vectors
    from vectorizer.pretrained import IMAGENET_WEIGHTS

    if backbone not in IMAGENET_WEIGHTS:
        return {}
    return {f"frozen ImageNet {backbone} (no training)": frozen_imagenet_vectors(backbone, images)}


def markdown(rows: list[dict], k: int, tasks: list[str]) -> str:
    lines = ["| method | dim | " + " | ".join(f"{t} mAP@{k}" for t in tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]
    lines += [f"| {r['method']} | {r['dim']} | " + " | ".join(f"{r[t]:.3f}" for t in tasks)
              + " |" for r in rows]
    return "\n".join(lines) + "\n"


def learned_baselines(config, items, encoder: Encoder, epochs: int, subset_rows: np.ndarray,
                      autoencoder: bool, same_steps: bool
                      ) -> tuple[dict[str, np.ndarray], dict, torch.Tensor]:
    """Train the single-task classifier (and the autoencoder) on the model's training split;
    `same_steps`: as many optimizer steps as the model took (a time budget may have cut them)."""
    from bench.baselines import (
        autoencoder_vectors,
        single_task_encoder,
        train_autoencoder,
        train_single_task,
    )
    task = next(iter(encoder.meta["tasks"]))
    steps = encoder.meta.get("plan", {}).get("steps") if same_steps else None
    trainer, single_report = train_single_task(config, items, task, epochs, steps)
    images = trainer.images[torch.from_numpy(subset_rows)]
    backbone = encoder.meta["backbone"]
    vectors = {f"single-task {backbone} ({task} only) penultimate":
               our_vectors(single_task_encoder(trainer), images)}
    report = {"epochs": epochs, "single_task": single_report}
    if autoencoder:
        model, report["autoencoder"] = train_autoencoder(
            trainer.images, trainer.train_rows, epochs=epochs,
            batch_size=config.model.batch_size, seed=config.training.seed,
            augmented=config.training.augment, warp_share=config.training.warp_share)
        vectors["conv autoencoder bottleneck"] = autoencoder_vectors(model, images)
    return vectors, report, images


def other_checkpoints(specs: list[str], subset, config) -> dict[str, np.ndarray]:
    """`--compare NAME=PATH`: another checkpoint's vectors, each with its own preprocessing."""
    from vectorizer.checkpoint import load_checkpoint

    vectors = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        model, meta = load_checkpoint(Path(path))
        encoder = Encoder(model, meta, "", config.model.precision)
        images, _ = load_all(subset["image_ref"].tolist(), encoder.preprocess, batch_size=256,
                             workers=config.model.num_workers,
                             max_pixels=config.download.max_pixels)
        vectors[name] = our_vectors(encoder, images)
    return vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config/fashion.yml")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="500 queries, 8,000 pool items")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false",
                        help="skip training the single-task classifier and the autoencoder")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training budget of the baselines (default: the model's own; "
                             "1 with --quick)")
    parser.add_argument("--no-autoencoder", dest="autoencoder", action="store_false",
                        help="skip the autoencoder baseline")
    parser.add_argument("--compare", action="append", default=[], metavar="NAME=CHECKPOINT",
                        help="add another model's vectors as a row (e.g. an earlier model)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    keep_freed_memory()  # the baselines train as vectorizer.train does (without: 1.3x slower steps)
    config = load_config(args.config)
    encoder = Encoder.from_config(config)
    items = load_catalog(config)
    split = encoder.meta["split"]
    query_rows, pool_rows = split_rows(items, split, args.queries, args.quick)
    rows = np.concatenate([query_rows, pool_rows])
    subset = items.iloc[rows].reset_index(drop=True)
    trained_epochs = len(encoder.meta.get("history") or []) or encoder.meta["training"]["epochs"]
    epochs = args.epochs or (1 if args.quick else int(trained_epochs))
    learned, training_report = {}, None
    same_steps = not (args.epochs or args.quick)  # the baselines take the model's own steps
    if args.baselines:
        learned, training_report, images = learned_baselines(
            config, items, encoder, epochs, rows, args.autoencoder, same_steps=same_steps)
    else:
        images, _ = load_all(subset["image_ref"].tolist(), encoder.preprocess, batch_size=256,
                             workers=config.model.num_workers,
                             max_pixels=config.download.max_pixels)
    queries, pool = np.arange(len(query_rows)), np.arange(len(query_rows), len(rows))
    k, tasks = config.evaluation.k, list(encoder.meta["tasks"])
    methods = {f"multitask {encoder.meta['backbone']} penultimate (ours)":
               our_vectors(encoder, images), **learned,
               **frozen_row(encoder.meta["backbone"], images),
               **other_checkpoints(args.compare, subset, config),
               "raw pixels 16x16": raw_pixels(images),
               "colour histogram 8x8x8": colour_histogram(images)}
    results = [evaluate(name, vectors, queries, pool, subset, k, tasks)
               for name, vectors in methods.items()]
    report = {"queries": len(query_rows), "pool": len(pool_rows), "k": k,
              "split": split.get("strategy"), "training": training_report, "results": results}
    out = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    plan = encoder.meta.get("plan") or {}
    length = (f"the multitask model's {plan['steps']} optimizer steps ({plan.get('epochs')} "
              f"epochs)" if same_steps and plan.get("steps") else f"{epochs} epochs")
    budget = (f" Learned baselines: {length} on the same training split and recipe, last "
              f"epoch kept; the multitask model: best validation epoch kept (epoch "
              f"{encoder.meta.get('best', {}).get('epoch', '?')})." if args.baselines else "")
    (out / "embeddings.md").write_text(
        f"Test queries ({len(query_rows)}) against training items ({len(pool_rows)}), exact "
        f"cosine search, split {split.get('strategy')}.{budget}\n\n"
        + markdown(results, k, tasks))
    print(json.dumps(report) if args.json else markdown(results, k, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
