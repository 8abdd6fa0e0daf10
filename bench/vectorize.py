"""Vectorization throughput (files → vectors) against pure forward speed; latency; bf16."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config import load_config
from ingest.catalog import load_catalog
from vectorizer.dataset import load_all
from vectorizer.device import bf16_supported, keep_freed_memory
from vectorizer.encoder import Encoder
from vectorizer.images import open_image
from vectorizer.model import build_backbone


class PairedForward:
    """Inside one end-to-end run, after each batch's forward, the pure forward of the same
    images decoded beforehand: both timed at the same moments, so the machine's drift (its
    speed moves by up to ~25 % within minutes) moves both alike. Timing forward and end to
    end one after the other, even in turns on slices, read 0.72-0.96 for one code."""

    def __init__(self, encoder: Encoder, images: torch.Tensor) -> None:
        self.encoder, self.images = encoder, images
        self.inside = self.alone = 0.0
        self.position = 0

    def __enter__(self) -> PairedForward:
        forward = self.encoder.forward

        def paired(batch: torch.Tensor):
            began = time.perf_counter()
            result = forward(batch)
            middle = time.perf_counter()
            forward(self.images[self.position:self.position + len(batch)])
            self.inside, self.alone = self.inside + middle - began, \
                self.alone + time.perf_counter() - middle
            self.position += len(batch)
            return result

        self.encoder.forward = paired
        return self

    def __exit__(self, *exc) -> None:
        del self.encoder.forward  # the class's method again


def throughput(encoder: Encoder, paths: list[str], images: torch.Tensor, config) -> dict:
    """End to end (files -> vectors) in one run, as build_index.py runs it, against the pure
    forward paired with it batch by batch; the paired forwards' time is not end to end's."""
    batch = config.model.batch_size
    encoder.forward(images[:batch])  # warm-up
    with PairedForward(encoder, images) as pair:
        began = time.perf_counter()
        encoder.embed_paths(paths, batch_size=batch, workers=config.model.num_workers,
                            max_pixels=config.download.max_pixels)
        whole = time.perf_counter() - began - pair.alone
    return {"forward_only_img_s": round(len(paths) / pair.alone, 1),
            "end_to_end_img_s": round(len(paths) / whole, 1),
            "ratio": round(pair.alone / whole, 3),
            "outside_forward_ms_per_img": round((whole - pair.inside) * 1000 / len(paths), 3),
            "forward_in_run_vs_alone": round(pair.inside / pair.alone, 3)}


def single_latency(encoder: Encoder, paths: list[str], max_pixels: int) -> dict:
    blobs = [Path(p).read_bytes() for p in paths]
    seconds = []
    for blob in blobs:
        began = time.perf_counter()
        encoder.embed_images([open_image(blob, max_pixels)])
        seconds.append(time.perf_counter() - began)
    ms = np.array(seconds[1:]) * 1000
    return {"single_p50_ms": float(np.percentile(ms, 50)),
            "single_p99_ms": float(np.percentile(ms, 99))}


def bf16_fidelity(encoder: Encoder, images: torch.Tensor) -> dict:
    fp32, _ = Encoder(encoder.model, encoder.meta, "", "fp32").forward(images)
    bf16, _ = Encoder(encoder.model, encoder.meta, "", "bf16").forward(images)
    cosine = np.sum(fp32 * bf16, axis=1)
    return {"bf16_supported": bf16_supported(torch.device("cpu")),
            "bf16_cosine_min": float(cosine.min()), "bf16_cosine_mean": float(cosine.mean())}


def input_size_sweep(backbone: str, batch_size: int, sizes=(64, 96, 128, 224)) -> dict:
    """Forward img/s of the backbone at several input sizes (random weights: speed only)."""
    model = build_backbone(backbone)[0].eval().to(memory_format=torch.channels_last)
    speeds = {}
    for size in sizes:
        batch = torch.randn(batch_size, 3, size, size).contiguous(
            memory_format=torch.channels_last)
        with torch.inference_mode():
            model(batch)
            began = time.perf_counter()
            model(batch)
            model(batch)
        speeds[str(size)] = round(2 * batch_size / (time.perf_counter() - began), 1)
    return speeds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="config/fashion.yml")
    parser.add_argument("--limit", type=int, default=None, help="images (default: whole catalog)")
    parser.add_argument("--quick", action="store_true", help="2,000 images, short sweeps")
    parser.add_argument("--precision", choices=["auto", "bf16", "fp32"], default=None,
                        help="override model.precision (auto: fp32 on CPUs)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    config = load_config(args.config)
    if args.precision:
        config.model.precision = args.precision
    keep_freed_memory()  # as build_index.py does
    encoder = Encoder.from_config(config)
    limit = 2000 if args.quick else args.limit
    paths = load_catalog(config)["image_ref"].tolist()[:limit]
    images, _ = load_all(paths, encoder.preprocess, batch_size=256,
                         workers=config.model.num_workers, max_pixels=config.download.max_pixels)
    result = {"images": len(paths), "backbone": encoder.meta["backbone"],
              "input_size": encoder.preprocess.input_size, "precision": encoder.precision,
              "threads": torch.get_num_threads()}
    result.update(throughput(encoder, paths, images, config))
    result["catalog_44k_seconds_at_end_to_end"] = round(44072 / result["end_to_end_img_s"], 1)
    result.update(single_latency(encoder, paths[:60 if args.quick else 300],
                                 config.download.max_pixels))
    result.update(bf16_fidelity(encoder, images[:64 if args.quick else 256]))
    result["input_size_forward_img_s"] = input_size_sweep(
        encoder.meta["backbone"], 64 if args.quick else config.model.batch_size)
    result["training_epoch_seconds"] = [r.get("seconds") for r in encoder.meta.get("history", [])]
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
