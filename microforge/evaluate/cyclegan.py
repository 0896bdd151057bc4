"""``microforge eval cyclegan``: score every epoch snapshot of a CycleGAN run on its test set, in
parallel as Ray tasks, and pick the best epoch.

Per epoch, on the test A images translated by ``generator_ab``:

* ``dice``: GT Dice of the thresholded output luminance (dark = nucleus) against A's masks;
* ``ssim``: structure SSIM of gray(fake B) against A;
* ``hsv``: correlation of the pooled HSV histogram of the fake B images with that of test B;
* ``fd``: Fréchet distance of texture descriptors of fake B to test B (gray, see
  :mod:`microforge.evaluate.features`).

The best epoch is the one with the best mean rank over the four scores (``--select`` picks one
score instead). Written to ``--out`` (default ``<run>/eval``), atomically: ``epochs.json``,
``scores.png`` (each score against epoch), ``best_epoch.png`` (A, fake B, GT rows of the best
epoch) and ``model/``, the best epoch's artifact.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..platform.config import suggest
from ..platform.errors import ConfigError, MicroforgeError
from ..platform.storage import atomic_replace_dir
from .distances import frechet_distance, gaussian_stats
from .features import texture_descriptor

__all__ = ["SCORES", "SELECT", "epoch_snapshots", "evaluate_run", "score_generator", "test_set"]

log = logging.getLogger(__name__)

SCORES = {"dice": "max", "ssim": "max", "hsv": "max", "fd": "min"}
SELECT = ("rank", *SCORES)
EPOCHS_DIR = "epochs"


def epoch_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, artifact dir)`` of every complete snapshot, by epoch.

    Raises:
        MicroforgeError: the run has none.
    """
    found = sorted((int(p.parent.name.split("_")[1]), p.parent) for p in Path(run_dir).glob(f"{EPOCHS_DIR}/epoch_*/model.json"))
    if not found:
        raise MicroforgeError(f"{run_dir} has no epoch snapshots ({EPOCHS_DIR}/epoch_NNNN/); train it with "
                              "--snapshot-every 1 (the default)")
    return found


def test_set(run_dir: str | Path, max_images: int | None = None) -> dict[str, np.ndarray]:
    """The run's test batch (``a``, ``a_gt``, ``has_gt``, ``b`` in the model's range): its dataset's test
    split, or the held-out renders of a run trained on renders.

    Raises:
        RunError: not a CycleGAN run; DatasetError: its dataset no longer validates.
    """
    from ..platform.imports import import_object
    from ..trainers.runs import RunError, read_run
    from ..trainers.workload import get_workload

    record = read_run(run_dir)
    if record.get("workload") != "cyclegan":
        raise RunError(f"{run_dir} trained '{record.get('workload')}', not cyclegan")
    workload = get_workload("cyclegan")
    options = workload.load_options(record["options"])
    data = import_object(workload.plan, "plan")(options).data
    if options.data is not None:
        from ..datasets.unaligned import open_split

        n = len(open_split(options.data, "test", fractions=tuple(data.config["fractions"]), check_pixels=False).a)
    else:
        n = options.val_samples or 16
    n = min(n, max_images) if max_images else n
    render = import_object(data.renderer, "test-set reader")
    return render(data.config, data.seed, list(range(n)), **data.val_kwargs)


def score_generator(generator: Any, test: dict[str, np.ndarray], real_stats: tuple, real_hist: np.ndarray,
                    threshold: float = 0.5, batch_size: int = 8) -> tuple[dict[str, float], np.ndarray]:
    """The four scores of ``generator`` (A -> B) on ``test``, and its fake B images."""
    import torch

    from ..trainers.cyclegan.losses import dice_score, histogram_correlation, hsv_histogram, luminance, ssim, to_unit

    fakes, dice, structure, hist = [], [], [], 0.0
    with torch.no_grad():
        for start in range(0, len(test["a"]), batch_size):
            # copies: arrays from Ray's object store are read-only
            a, gt, has = (torch.tensor(test[k][start:start + batch_size]) for k in ("a", "a_gt", "has_gt"))
            fake = generator(a)
            dice.append(dice_score(fake[has > 0.5], gt[has > 0.5], threshold))
            structure.append(ssim(luminance(to_unit(fake)), to_unit(a)))
            hist = hist + hsv_histogram(to_unit(fake)).sum(0)
            fakes.append(fake)
        fake = torch.cat(fakes)
        hsv = float(histogram_correlation(hist[None], torch.tensor(real_hist)[None])[0])
    dice_all = torch.cat(dice)
    features = _texture(fake.numpy())
    scores = {"dice": float(dice_all.mean()) if dice_all.numel() else float("nan"),
              "ssim": float(torch.cat(structure).mean()), "hsv": hsv,
              "fd": float(frechet_distance(*real_stats, *gaussian_stats(features)))}
    return scores, fake.numpy()


def _texture(images: np.ndarray) -> np.ndarray:
    unit = np.clip((images + 1) / 2, 0, 1)
    grey = unit[:, 0] * 0.299 + unit[:, 1] * 0.587 + unit[:, 2] * 0.114 if unit.shape[1] == 3 else unit[:, 0]
    return np.stack([texture_descriptor(g) for g in grey]).astype(np.float64)


def _score_epoch(snapshot: str, test: dict[str, np.ndarray], real_stats: tuple, real_hist: np.ndarray,
                 threshold: float) -> dict[str, float]:
    # One Ray task per epoch: one thread each, so W tasks use W cores.
    import torch

    from ..trainers.registry import load_artifact

    torch.set_num_threads(1)
    scores, _ = score_generator(load_artifact(snapshot)["generator_ab"], test, real_stats, real_hist, threshold)
    return scores


def _best(rows: list[dict[str, Any]], select: str) -> dict[str, Any]:
    def usable(name: str) -> bool:
        return all(math.isfinite(r[name]) for r in rows)

    if select != "rank":
        if not usable(select):
            raise MicroforgeError(f"cannot select by '{select}': it is not measured on this test set (no GT?)")
        pick = max if SCORES[select] == "max" else min
        return pick(rows, key=lambda r: r[select])
    names = [n for n in SCORES if usable(n)]
    for name in names:
        values = np.array([r[name] for r in rows]) * (-1 if SCORES[name] == "max" else 1)
        for r, rank in zip(rows, values.argsort().argsort()):
            r.setdefault("_ranks", []).append(int(rank) + 1)
    for r in rows:
        r["mean_rank"] = float(np.mean(r.pop("_ranks")))
    return min(rows, key=lambda r: (r["mean_rank"], -r["epoch"]))


def evaluate_run(run_dir: str | Path, *, out: str | Path | None = None, workers: int | None = None,
                 select: str = "rank", max_images: int | None = None, address: str | None = None) -> dict[str, Any]:
    """Score every epoch snapshot of ``run_dir`` (see the module doc); returns the report.

    Raises:
        ConfigError: an unknown ``select`` or workers < 1; MicroforgeError: no snapshots, not a
            CycleGAN run. Nothing is written in those cases.
    """
    import ray
    import torch

    from ..platform.runtime import ray_runtime
    from ..trainers.cyclegan.losses import hsv_histogram, to_unit

    if select not in SELECT:
        raise ConfigError(f"unknown --select '{select}'{suggest(select, SELECT)}; valid: {', '.join(SELECT)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    from ..trainers.runs import read_run

    run_dir = Path(run_dir).absolute()
    read_run(run_dir)  # a clear error for a directory that is not a run
    snapshots = epoch_snapshots(run_dir)
    test = test_set(run_dir, max_images)
    threshold = float(json.loads((snapshots[0][1] / "model.json").read_text())["preprocessing"].get("gt_threshold", .5))
    real_stats = gaussian_stats(_texture(test["b"]))
    real_hist = hsv_histogram(to_unit(torch.tensor(test["b"]))).sum(0).numpy()
    with ray_runtime(address):
        started = time.perf_counter()  # scoring only, not the Ray start
        limit = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        task = ray.remote(num_cpus=1)(_score_epoch)
        shared = [ray.put(x) for x in (test, real_stats, real_hist)]
        pending, results = {}, {}
        queue = list(snapshots)
        while queue or pending:
            while queue and len(pending) < limit:
                epoch, path = queue.pop(0)
                pending[task.remote(str(path), *shared, threshold)] = epoch
            done, _ = ray.wait(list(pending), num_returns=1)
            results[pending.pop(done[0])] = ray.get(done[0])
            log.info("scored epoch %d (%d of %d)", max(results), len(results), len(snapshots))
        seconds = time.perf_counter() - started
    rows = [{"epoch": epoch, **results[epoch]} for epoch, _ in snapshots]
    best = _best(rows, select)
    best_dir = dict(snapshots)[best["epoch"]]
    from ..trainers.registry import load_artifact

    _, fakes = score_generator(load_artifact(best_dir)["generator_ab"], test, real_stats, real_hist, threshold)
    report = {"run": str(run_dir), "epochs": rows, "best_epoch": best["epoch"], "select": select,
              "test_images": int(len(test["a"])), "workers": limit, "seconds": seconds}
    out = Path(out) if out is not None else run_dir / "eval"
    _write(out, report, best_dir, test, fakes)
    report["out"] = str(out)
    return report


def _write(out: Path, report: dict[str, Any], best_dir: Path, test: dict[str, np.ndarray], fakes: np.ndarray) -> None:
    import cv2

    from .cyclegan_plots import best_grid, score_plot

    plot, grid = score_plot(report["epochs"], report["best_epoch"]), best_grid(test, fakes)

    def fill(tmp: Path) -> None:
        (tmp / "epochs.json").write_text(json.dumps(report, indent=2) + "\n")
        for name, image in (("scores.png", plot), ("best_epoch.png", grid)):
            ok, data = cv2.imencode(".png", image)
            if not ok:
                raise OSError(f"OpenCV could not encode {name}")
            (tmp / name).write_bytes(data.tobytes())
        shutil.copytree(best_dir, tmp / "model")

    atomic_replace_dir(out, fill)
