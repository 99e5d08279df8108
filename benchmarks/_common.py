"""What every benchmark record carries: device, versions, date, CPU count."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

import jax


def environment() -> dict:
    """Device, library versions, date and usable CPU count of this run."""
    device = jax.devices()[0]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = dict(python=platform.python_version())
    for package in ("jax", "jaxlib", "flax", "numpy", "ersde_jax"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=dict(platform=device.platform, kind=device.device_kind),
        cpu_count=cpus,
        versions=versions,
    )
