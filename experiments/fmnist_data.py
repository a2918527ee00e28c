"""Fashion-MNIST IDX reader (Debian package `dataset-fashion-mnist`).

The Rust twin lives in `crates/fd-eval/src/idx.rs`; both check magic numbers and sizes and fail with
a message naming the file.
"""
from __future__ import annotations

import gzip
import os
import struct

import numpy as np

FMNIST_DIR = os.environ.get("FD_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]


def _open(path: str):
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: Fashion-MNIST file missing (install Debian package dataset-fashion-mnist, "
            f"or set FD_FMNIST_DIR)")
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its declared shape."""
    with _open(path) as f:
        data = f.read()
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = struct.unpack(">" + "I" * ndim, data[4:header])
    n = int(np.prod(dims))
    if len(data) - header != n:
        raise ValueError(f"{path}: expected {n} data bytes for shape {dims}, found {len(data) - header}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Return (images uint8 [N,28,28], labels int64 [N]) for split 'train' (60k) or 't10k' (10k)."""
    prefix = {"train": "train", "test": "t10k", "t10k": "t10k"}[split]
    images = read_idx(os.path.join(FMNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(FMNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz")).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{FMNIST_DIR}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels
