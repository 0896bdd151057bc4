"""The hardware search over model sizes and resolutions (FastGAN): the probe times the whole manual
step, the recommendation per resolution is the best samples/s among fitting batches, it is stored
and applied by ``train`` unless a flag is given, and bad input writes nothing."""

import logging
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from microforge.platform.cli import main
from microforge.platform.recommendations import load_recommendations, physical_memory_bytes
from microforge.trainers import TrainingResult
from microforge.tune import (
    BatchSearchResult,
    BatchSizeReport,
    ProbeResult,
    recommendations_from_report,
    search_batch_size,
)
from microforge.tune.probe import measure_training_step, step_timer

GiB = 2**30
SIZES = ("micro", "small", "standard", "large", "xlarge")


def test_the_probe_times_the_whole_manual_step_after_warm_up(monkeypatch):
    """A tiny FastGAN (ngf = ndf = 8, 256 px): every timed interval holds a whole step (G and D
    forwards, the D then G optimizer steps, the EMA update last) and nothing of a step falls
    outside it; the step time is the median of the steps after the warm-up."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    import microforge.trainers.fastgan.lightning as fastgan
    from microforge.trainers.workload import get_workload

    torch.set_num_threads(1)
    module = get_workload("fastgan").job({"size": "micro", "resolution": 256, "width": 8}, epochs=1,
                                         runs_dir=".").build_module()
    events = []  # (what, perf_counter)
    ema = fastgan.ema_update

    def recorded_ema(*args, **kwargs):
        ema(*args, **kwargs)
        events.append(("ema", time.perf_counter()))

    monkeypatch.setattr(fastgan, "ema_update", recorded_ema)
    stamp = time.perf_counter
    hooks = [module.generator.register_forward_pre_hook(lambda *_: events.append(("G", stamp()))),
             module.discriminator.register_forward_pre_hook(lambda *_: events.append(("D", stamp()))),
             register_optimizer_step_post_hook(lambda *_: events.append(("step", stamp())))]
    timer = step_timer(cuda=False)
    try:
        result = measure_training_step(module, 1, warmup_steps=1, measure_steps=2, optimization="manual",
                                       gradient_clip_val=None, timer=timer)
    finally:
        for hook in hooks:
            hook.remove()
    assert result.status == "ok", result.message
    assert [i for i, _, _ in timer.intervals] == [0, 1, 2] and result.measured_steps == 2
    assert result.step_time_s == statistics.median(timer.times[1:])  # the warm-up step is not in it
    for _, start, end in timer.intervals:
        inside = [what for what, t in events if start <= t <= end]
        assert inside[0] == "G" and inside.count("step") == 2 and inside[-1] == "ema", inside
        assert inside.count("D") >= 3  # real, fake for D's loss, fake for G's loss
    assert len(events) == sum(len([1 for _, t in events if s <= t <= e]) for _, s, e in timer.intervals)


def test_on_a_gpu_the_timer_synchronises_before_each_time_stamp(monkeypatch):
    """The CPU-testable part of the CUDA path: the device is synchronised before the start stamp
    (so the previous step's kernels are not counted) and before the end stamp (so this step's are)."""
    timer = step_timer(cuda=True)
    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize",
                        lambda *_: seen.append((timer._start is not None, len(timer.intervals))))
    for batch_idx in range(2):
        timer.on_train_batch_start(None, None, None, batch_idx)
        timer.on_train_batch_end(None, None, None, None, batch_idx)
    assert seen == [(False, 0), (True, 0), (False, 1), (True, 1)]
    assert [i for i, _, _ in timer.intervals] == [0, 1]


def search_result(probes):
    fitted = [p for p in probes if p.fits]
    best = max(fitted, key=lambda p: p.samples_per_s)
    return BatchSearchResult(max_batch=max(p.batch_size for p in fitted), best_batch=best.batch_size,
                             probes=tuple(probes))


def test_the_recommended_preset_has_the_most_samples_per_second_and_a_tie_goes_to_the_larger():
    fast = search_result([ProbeResult(1, "ok", 0.1), ProbeResult(2, "ok", 0.1), ProbeResult(4, "oom")])  # 20/s
    slow = search_result([ProbeResult(1, "ok", 0.1), ProbeResult(2, "oom")])  # 10/s
    report = BatchSizeReport(workload="fastgan", presets=("micro", "small", "standard"), resolutions=(256, 512),
                             precision="32-true", device="cpu", device_memory_bytes=4 * GiB,
                             results={("micro", 256): slow, ("small", 256): fast, ("standard", 256): slow,
                                      ("micro", 512): fast, ("small", 512): fast})
    assert report.recommended(256) == ("small", fast)
    assert report.recommended(512) == ("small", fast)  # equal samples/s: the larger model
    assert BatchSizeReport(**{**report.__dict__, "results": {}}).recommended(256) is None
    records = {(r.preset, r.resolution): r for r in recommendations_from_report(report)}
    assert {k for k, r in records.items() if r.recommended} == {("small", 256), ("small", 512)}
    assert records["small", 256].best_batch == 2 and records["micro", 256].best_batch == 1


# A fake device for the CLI: per size and resolution a memory limit and a throughput curve.
LIMITS = {256: dict(micro=24, small=16, standard=12, large=6, xlarge=3),
          512: dict(micro=6, small=4, standard=3, large=2, xlarge=0)}
PEAK = {256: "small", 512: "micro"}  # where throughput peaks per resolution (not always the smallest)


def fake_probe(settings, preset, batch_size, *, timeout_s, cpus):
    resolution = settings.resolution
    if batch_size > LIMITS[resolution][preset]:
        return ProbeResult(batch_size, "oom", message="OutOfMemoryError: CUDA out of memory")
    rank = abs(SIZES.index(preset) - SIZES.index(PEAK[resolution]))
    # samples/s rises with the batch up to 8, then falls; lower for sizes far from the peak size
    samples_per_s = (100 - 10 * rank) * min(batch_size, 8) / 8 - max(0, batch_size - 8)
    return ProbeResult(batch_size, "ok", step_time_s=batch_size / samples_per_s, peak_memory_bytes=batch_size * 2**20)


@pytest.fixture()
def fake_launch(monkeypatch):
    jobs = []

    def launch(job, *, resume=False, address=None, callbacks=()):
        jobs.append(job)
        run_dir = Path(job.runs_dir) / job.name
        return TrainingResult(run_dir=run_dir, best_checkpoint=None, metrics={"epoch": 0, "val_fd": 1.0},
                              last_metrics={}, epochs_completed=1, artifact=run_dir / "model", seconds=0.1)

    monkeypatch.setattr("microforge.trainers.launcher.launch", launch)
    return jobs


def test_sizes_by_resolutions_are_searched_recommended_stored_and_applied_unless_a_flag_is_given(
        ray_local, state_home, monkeypatch, fake_launch, tmp_path, caplog, capsys):
    assert physical_memory_bytes() >= 4 * GiB
    monkeypatch.setattr("microforge.tune.batch_search.probe_in_fresh_actor", fake_probe)
    code = main(["tune", "batch-size", "--trainer", "fastgan", "--sizes", ",".join(SIZES), "--resolution", "256,512",
                 "--memory-budget", "4GiB", "--steps", "1"])
    captured = capsys.readouterr()
    assert code == 2  # xlarge at 512 px does not fit batch 1: reported after storing the others
    assert "xlarge at 512 px: batch size 1 runs out of memory" in captured.err
    out = captured.out
    assert "fastgan at 256, 512 px, 32-true, on CPU, budget 4.0 GiB" in out
    assert "*: recommended at 256 px: size small, batch 8" in out
    assert "*: recommended at 512 px: size micro, batch 6" in out
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines() if line.split()[:1] in (["256"], ["512"])}
    assert rows["256", "small"][2] == "*" and rows["512", "xlarge"][-1] == "failed"

    records = {(r.preset, r.resolution): r for r in load_recommendations()}
    assert len(records) == 9 and ("xlarge", 512) not in records
    for (preset, resolution), rec in records.items():
        # the largest batch that fits (found past OOM probes), the fastest of the batches probed
        expected = search_batch_size(lambda b: fake_probe(SimpleNamespace(resolution=resolution), preset, b,
                                                          timeout_s=1, cpus=1))
        assert rec.max_batch == LIMITS[resolution][preset] == expected.max_batch
        fitted = [p for p in expected.probes if p.fits]
        assert rec.samples_per_s == max(p.samples_per_s for p in fitted)
        assert rec.best_batch == expected.best_batch
    best = {res: max((r for r in records.values() if r.resolution == res), key=lambda r: r.samples_per_s)
            for res in (256, 512)}
    assert {k for k, r in records.items() if r.recommended} == {(best[256].preset, 256), (best[512].preset, 512)} \
        == {("small", 256), ("micro", 512)}

    caplog.set_level(logging.INFO, logger="microforge.trainers.cli")
    train = ["train", "fastgan", "--epochs", "1", "--name", "r", "--out", str(tmp_path / "runs")]
    for flags, expected in [([], ("small", records["small", 256].best_batch)),  # neither given: the pair
                            (["--resolution", "512"], ("micro", records["micro", 512].best_batch)),
                            (["--size", "large"], ("large", records["large", 256].best_batch)),  # its batch
                            (["--batch-size", "3"], ("micro", 3)),  # the default size, the given batch
                            (["--size", "standard", "--batch-size", "5"], ("standard", 5))]:
        assert main([*train, *flags]) == 0, flags
        job = fake_launch[-1]
        assert (job.options["size"], job.batch_size) == expected, flags
    assert "size small, batch size 8: recommended at 256 px" in caplog.text
    capsys.readouterr()


def test_bad_sizes_and_resolutions_exit_2_with_one_line_and_write_nothing(state_home, capsys):
    base = ["tune", "batch-size", "--trainer", "fastgan", "--memory-budget", "4GiB"]
    cases = [(["--sizes", "micro,huge", "--resolution", "256"], "no size 'huge'"),
             (["--sizes", "micro", "--resolution", "256,384"], "resolution: Input should be 256, 512 or 1024"),
             (["--sizes", "micro", "--resolution", "256,big"], "resolution 'big' is not a positive number"),
             (["--sizes", "micro", "--resolution", "256", "--option", "size=small"], "what the search varies"),
             (["--sizes", "micro", "--resolution", "256", "--option", "widht=8"], "widht")]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("microforge: error: ") and message in err and err.count("\n") == 1, (extra, err)
    assert not state_home.exists() or load_recommendations() == []


@pytest.mark.slow
def test_a_tiny_fastgan_search_in_fresh_actors_through_the_cli(ray_local, state_home, capsys):
    """Real probes: two sizes at ngf = ndf = 8 (the same network, so either may win), 256 px,
    batches 1 and 2, each probe in a fresh actor; a model changed by --option is not stored."""
    code = main(["tune", "batch-size", "--trainer", "fastgan", "--sizes", "micro,small", "--resolution", "256",
                 "--option", "width=8", "--memory-budget", "8GiB", "--max-batch", "2", "--steps", "1",
                 "--timeout", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    print(out)
    rows = [line.split() for line in out.splitlines() if line.startswith("256")]
    assert [r[1] for r in rows] == ["micro", "small"] and all(r[-1] == "2" for r in rows)
    rates = {r[1]: float(r[-3]) for r in rows}
    assert f"recommended at 256 px: size {max(rates, key=rates.get)}," in out
    assert "not stored" in out and load_recommendations() == []


@pytest.mark.gpu
def test_gpu_search_of_sizes_and_resolutions_recommends_the_fastest_per_resolution(ray_local, state_home):
    """On a GPU: real FastGAN sizes at 256 and 512 px in bf16, probes in parallel across the GPUs."""
    from microforge.tune import BatchSizeSearch

    if not torch.cuda.is_available() or not ray_local.cluster_resources().get("GPU"):
        pytest.skip("needs a CUDA GPU in the Ray cluster")
    report = BatchSizeSearch(workload="fastgan", presets=("micro", "small"), resolutions=(256, 512),
                             precision="bf16-mixed", device="gpu", max_batch=16, timeout_s=300).run()
    assert set(report.results) == {(p, r) for p in ("micro", "small") for r in (256, 512)}, report.errors
    assert report.device == torch.cuda.get_device_name(0)
    for resolution in (256, 512):
        preset, result = report.recommended(resolution)
        rates = {p: report.results[p, resolution].best.samples_per_s for p in ("micro", "small")}
        assert rates[preset] == max(rates.values())
        assert all(p.measured_steps == 3 for p in result.probes if p.fits)
    records = recommendations_from_report(report)
    assert sum(r.recommended for r in records) == 2
