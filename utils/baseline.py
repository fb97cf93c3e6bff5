"""The plain loop's answers and time, measured once per machine and reused by later notebooks.

Every Ray notebook compares its maps and its speed with the sequential loop of notebook 01.
Running that loop again at the top of each notebook costs a learner minutes and teaches nothing
new, so `sequential_baseline` saves the maps and the time in the course cache the first time
and reads them back afterwards. The saved copy belongs to one configuration: the same images,
the same model weights, the same device, the same `predict` code and this machine. Anything
else, or `recompute=True`, runs the loop again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import get_config
from .inference import predict
from .timing import Stopwatch


@dataclass(frozen=True)
class Baseline:
    """The loop's map for each image id and how long the loop took, where and when."""

    maps: dict[str, np.ndarray]
    seconds: float
    device: str
    threads: int
    measured_at: str  # local time, "YYYY-MM-DD HH:MM"
    reused: bool

    def __str__(self) -> str:
        rate = len(self.maps) / self.seconds if self.seconds else float("nan")
        when = f"measured {self.measured_at}, read back" if self.reused else "measured just now"
        return (
            f"Sequential loop on {self.device}: {len(self.maps)} images in {self.seconds:.1f} s "
            f"({rate:.2f} images/s), {self.threads} torch threads; {when}"
        )


def sequential_baseline(
    image_ids: Sequence[str],
    images: Sequence[Image.Image],
    model: torch.nn.Module,
    image_processor,
    device: torch.device | str | None = None,
    recompute: bool = False,
    cache_dir: Path | None = None,
) -> Baseline:
    """The loop's maps for `images` (keyed by `image_ids`) and its time, from the cache if
    this configuration was measured before on this machine, else measured now and saved."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    path = (
        (cache_dir or get_config().cache_dir)
        / "baselines"
        / f"{_key(image_ids, model, device)}.npz"
    )
    if path.is_file() and not recompute:
        try:
            return _load(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable (a disk filled up, a foreign file): measure again and replace it
    with Stopwatch() as loop:  # predict runs the batch loop itself, a bounded batch at a time
        maps = dict(zip(image_ids, predict(model, image_processor, images, device)))
    baseline = Baseline(
        maps=maps,
        seconds=loop.seconds,
        device=device.type,
        threads=torch.get_num_threads(),
        measured_at=time.strftime("%Y-%m-%d %H:%M"),
        reused=False,
    )
    _save(path, baseline)
    return baseline


def _key(image_ids: Sequence[str], model: torch.nn.Module, device: torch.device) -> str:
    """A name for one configuration: images, weights, device, `predict`'s code, this machine."""
    digest = hashlib.sha256()
    digest.update(json.dumps(list(image_ids)).encode())
    digest.update(model.config.to_json_string().encode())
    for tensor in model.state_dict().values():  # every weight: a fine-tuned copy differs
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    here = Path(__file__).parent
    for module in ("inference.py", "_upsample.py"):
        digest.update((here / module).read_bytes())
    digest.update(f"{device.type}|{platform.node()}|{torch.__version__}".encode())
    return digest.hexdigest()[:24]


def _save(path: Path, baseline: Baseline) -> None:
    """Write the baseline atomically: a notebook stopped mid-write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: getattr(baseline, k) for k in ("seconds", "device", "threads", "measured_at")}
    ids = list(baseline.maps)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
        np.savez_compressed(
            handle,
            meta=json.dumps({**meta, "ids": ids}),
            **{f"m{i}": baseline.maps[k] for i, k in enumerate(ids)},
        )
    os.replace(handle.name, path)


def _load(path: Path) -> Baseline:
    """Read a saved baseline back; raises if the file is not one `_save` wrote."""
    with np.load(path) as saved:
        meta = json.loads(str(saved["meta"]))
        maps = {image_id: saved[f"m{i}"] for i, image_id in enumerate(meta.pop("ids"))}
    return Baseline(maps=maps, reused=True, **meta)
