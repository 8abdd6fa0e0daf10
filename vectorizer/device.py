"""Device and numeric precision: CUDA when present, bf16 autocast only where the hardware has it."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 matrix work is native: recent GPUs, or CPUs with AVX-512 BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(requested: str, device: torch.device) -> str:
    """`auto` is bf16 on a GPU that has it and fp32 on every CPU; an explicit value is kept.

    Measured on a CPU with AMX bf16 (bench/vectorize.py, README "Measured figures"): bf16
    autocast halves training throughput, makes a single query slower, and moves vectors to a
    minimum cosine of 0.994 to fp32; only bulk vectorizing gains (1.3x). So CPUs stay in fp32
    unless a config asks for bf16.
    """
    if requested == "auto":
        return "bf16" if device.type == "cuda" and bf16_supported(device) else "fp32"
    return requested


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def set_threads(num_threads: int) -> None:
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep and reuse freed memory instead of returning it to the system.

    Training and bulk vectorizing allocate and free the same large activation buffers every
    batch; by default glibc serves each with a fresh mmap, or trims the heap after it, so every
    batch page-faults them in again. Here: no mmap for large blocks, and trim only past 2 GiB
    free (measured on the AMD EPYC: forward 419 -> 684 img/s, page faults per batch of 128 from
    ~80,000 to ~0). mallopt takes a C int: an argument of 2**31 or more is refused, never
    truncated. No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, then restore the count.

    While decoding workers fill the cores, the main process only copies their batches; with
    its usual thread pool, idle pool threads spin after each copy and take CPU from the
    workers (`load_all` of 8,192 catalog shots, 2 workers: main-process CPU 0.136 -> 0.048 ms
    per image, wall 0.326 -> 0.295 ms per image).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
