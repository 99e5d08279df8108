"""The on-disk state of a generation job: its settings, the completed shards, the final files.

Layout of the output directory ``out``::

    shards/settings.json          the run's settings, written before any shard
    shards/shard-START-STOP.npz   the samples of global indices START <= i < STOP
    samples.npz                   arr_0 uint8 (N, H, W, C), arr_1 int labels (N,)
    samples.png                   a grid of the first 100 samples (PNG written with zlib)
    manifest.json                 the settings and the run's record; written last

Every file is written under a temporary name in its directory and then renamed
(``os.replace``), so a reader, or a resumed run, only ever sees whole files: the names of the
shards are the record of which indices are done. ``manifest.json`` marks a complete run; the
``shards`` directory is removed after it is written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = [
    "check", "start", "write_shard", "done_ranges", "count_done", "finish", "is_complete",
    "read_manifest", "mark_failed", "raise_if_failed", "png",
]

_SHARD = re.compile(r"shard-(\d{10})-(\d{10})\.npz")
GRID_SAMPLES = 100
GRID_COLUMNS = 10


def _atomic_write(path: Path, write: Callable) -> None:
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it to ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def _differences(settings: dict, stored: dict) -> list[str]:
    return sorted(k for k in settings.keys() | stored.keys() if settings.get(k) != stored.get(k))


def is_complete(out: Path) -> bool:
    """Whether ``out`` holds a complete run (its manifest is written last)."""
    return (out / "manifest.json").exists()


def read_manifest(out: Path) -> dict:
    """The manifest of the complete run in ``out``."""
    return json.loads((out / "manifest.json").read_text())


def done_ranges(out: Path) -> list[tuple[int, int]]:
    """The ``(start, stop)`` index ranges of the completed shards in ``out``, sorted."""
    shards = out / "shards"
    names = os.listdir(shards) if shards.is_dir() else []
    return sorted((int(m[1]), int(m[2])) for m in map(_SHARD.fullmatch, names) if m)


def count_done(out: Path) -> int:
    """The number of samples in completed shards."""
    return sum(stop - start for start, stop in done_ranges(out))


def check(out: Path, settings: dict, resume: bool) -> bool:
    """Whether ``out`` already holds this run, complete (and ``resume`` is set); reads only.

    Raises:
        ValueError: ``out`` holds a run (complete or partial) with other settings; it holds
            this run, complete or partial, and ``resume`` is not set.
    """
    settings = json.loads(json.dumps(settings))  # as read back from JSON (lists, not tuples)
    if is_complete(out):
        stored = read_manifest(out)["settings"]
        if _differences(settings, stored):
            raise ValueError(
                f"{out} holds a complete run with other settings "
                f"({', '.join(_differences(settings, stored))} differ); choose another directory."
            )
        if not resume:
            raise ValueError(f"{out} already holds this run, complete; pass resume=True "
                             f"(--resume) to reuse it, or choose another directory.")
        return True
    stored_path = out / "shards" / "settings.json"
    if stored_path.exists():
        stored = json.loads(stored_path.read_text())
        if _differences(settings, stored):
            raise ValueError(
                f"{out} holds a partial run with other settings "
                f"({', '.join(_differences(settings, stored))} differ); it cannot be resumed "
                f"with these: choose another directory."
            )
        if not resume:
            raise ValueError(
                f"{out} holds a partial run of these settings ({count_done(out)} of "
                f"{settings['num_samples']} samples); pass resume=True (--resume) to finish it."
            )
    return False


def start(out: Path, settings: dict) -> None:
    """Makes ``out`` ready for the shards of the run :func:`check` accepted."""
    (out / "shards").mkdir(parents=True, exist_ok=True)
    if not (out / "shards" / "settings.json").exists():
        _write_json(out / "shards" / "settings.json", settings)
    for failed in (out / "shards").glob("failed-*.txt"):  # of a run being resumed
        failed.unlink()


def mark_failed(out: Path, process: int, error: Exception) -> None:
    """Records that ``process`` failed, for the processes waiting on it."""
    message = " ".join(f"{type(error).__name__}: {error}".split())
    _atomic_write(out / "shards" / f"failed-{process}.txt", lambda f: f.write(message.encode()))


def raise_if_failed(out: Path) -> None:
    """Raises RuntimeError if a process of this run recorded a failure."""
    for path in sorted((out / "shards").glob("failed-*.txt")):
        process = path.stem.split("-")[1]
        raise RuntimeError(f"Process {process} failed: {path.read_text()}")


def write_shard(out: Path, start: int, stop: int, images: np.ndarray, labels: np.ndarray,
                nonfinite: int) -> None:
    """Writes the samples of indices ``start <= i < stop`` as one completed shard."""
    path = out / "shards" / f"shard-{start:010d}-{stop:010d}.npz"
    _atomic_write(path, lambda f: np.savez(f, images=images, labels=labels,
                                           nonfinite=np.int64(nonfinite)))


def _grid(images: np.ndarray) -> np.ndarray:
    """The first ``GRID_SAMPLES`` images tiled ``GRID_COLUMNS`` wide, 1-pixel gaps, upscaled."""
    images = images[:GRID_SAMPLES]
    n, h, w, c = images.shape
    rows = -(-n // GRID_COLUMNS)
    grid = np.full((rows * (h + 1) + 1, GRID_COLUMNS * (w + 1) + 1, c), 255, np.uint8)
    for k, image in enumerate(images):
        r, col = divmod(k, GRID_COLUMNS)
        grid[1 + r * (h + 1):(r + 1) * (h + 1), 1 + col * (w + 1):(col + 1) * (w + 1)] = image
    scale = max(1, 32 // max(h, w))
    return grid.repeat(scale, 0).repeat(scale, 1)


def png(image: np.ndarray) -> bytes:
    """The PNG file of a uint8 image ``(H, W, C)``, C in 1 (grey), 3 (RGB), 4 (RGBA)."""
    h, w, c = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = np.concatenate([np.zeros((h, 1), np.uint8), image.reshape(h, w * c)], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 8, {1: 0, 3: 2, 4: 6}[c], 0, 0, 0)  # 8 bits, no filter
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b""))


def finish(out: Path, num_samples: int, record: dict) -> dict:
    """Assembles the shards into ``samples.npz`` and ``samples.png``, writes the manifest
    (``record`` plus the count of non-finite samples) and removes the shards; returns it.

    Raises:
        RuntimeError: the shards do not cover ``0 <= i < num_samples`` exactly once.
    """
    ranges = done_ranges(out)
    bounds = [0] + [stop for _, stop in ranges]
    if [start for start, _ in ranges] != bounds[:-1] or bounds[-1] != num_samples:
        raise RuntimeError(f"The shards in {out / 'shards'} do not cover the indices 0 to "
                           f"{num_samples - 1} exactly once: {ranges}.")
    images, labels, nonfinite = [], [], 0
    for start, stop in ranges:
        with np.load(out / "shards" / f"shard-{start:010d}-{stop:010d}.npz") as shard:
            images.append(shard["images"])
            labels.append(shard["labels"])
            nonfinite += int(shard["nonfinite"])
    images, labels = np.concatenate(images), np.concatenate(labels)
    _atomic_write(out / "samples.npz", lambda f: np.savez(f, arr_0=images, arr_1=labels))
    _atomic_write(out / "samples.png", lambda f: f.write(png(_grid(images))))
    manifest = dict(record, nonfinite_samples=nonfinite)
    _write_json(out / "manifest.json", manifest)
    shutil.rmtree(out / "shards")
    for name in ("samples.npz", "samples.png", "manifest.json"):  # left by a killed run
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink()
    return manifest
