"""Atomic checkpoint folders: written as `ckpt.tmp-XXXX` beside their place, then renamed into it.

A reader sees the previous checkpoint or the new one, never a partial one; leftover temporary folders of a
crashed writer are removed by `checkpoint_find`. A checkpoint holds model, optimizer, scheduler and RNG
states (torch, random, numpy) and a JSON state (step, config, history). Plain Python and torch: no Django.
"""

import json
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

CHECKPOINT = "checkpoint"
TMP_PREFIX = "ckpt.tmp-"


def directory_publish(tmp: Path, target: Path) -> None:
    """Rename the complete folder `tmp` to `target`, replacing a previous `target` (same filesystem).

    A directory cannot be renamed over a non-empty one, so the old one steps aside first; if the process
    dies between the two renames, `checkpoint_find` still finds the old folder.
    """
    old = None
    if target.exists():
        old = target.with_name(f"{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def directory_tmp(parent: Path, prefix: str = TMP_PREFIX) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def checkpoint_find(parent: Path) -> Path | None:
    """The checkpoint folder in `parent`, if any; leftover temporary folders are removed."""
    if not parent.exists():
        return None
    for leftover in parent.glob(f"{TMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    current = parent / CHECKPOINT
    old = sorted(parent.glob(f"{CHECKPOINT}.old-*"), key=lambda p: p.stat().st_mtime)
    if current.is_dir():
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
        return current
    return old[-1] if old else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, write: Callable[[Path], None]) -> None:
    write(path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def checkpoint_save(parent: Path, *, model, optimizer, scheduler, state: dict) -> Path:
    """Write a checkpoint into `parent/checkpoint` atomically; `state` is JSON (step, config, history, ...)."""
    tmp = directory_tmp(parent)
    try:
        _write(tmp / "model.pt", lambda p: torch.save(model.state_dict(), p))
        trainer_state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        _write(tmp / "trainer.pt", lambda p: torch.save(trainer_state, p))
        np_state = np.random.get_state()
        rng = {
            "python": random.getstate(),
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }
        _write(tmp / "state.json", lambda p: p.write_text(json.dumps({**state, "rng": rng})))
        _fsync_dir(tmp)
        directory_publish(tmp, parent / CHECKPOINT)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return parent / CHECKPOINT


def checkpoint_load(path: Path, *, model, optimizer=None, scheduler=None) -> dict:
    """Restore a checkpoint written by `checkpoint_save` into the given objects and the RNGs; returns its state."""
    model.load_state_dict(torch.load(path / "model.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    if optimizer is not None and scheduler is not None:
        trainer_state = torch.load(path / "trainer.pt", weights_only=True)
        optimizer.load_state_dict(trainer_state["optimizer"])
        scheduler.load_state_dict(trainer_state["scheduler"])
        torch.set_rng_state(trainer_state["torch_rng"])
        python_state = state["rng"]["python"]
        random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
        name, keys, *rest = state["rng"]["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    return state


def seed_all(seed: int) -> None:
    """Seed torch, random and numpy."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)
