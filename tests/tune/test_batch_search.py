"""Batch-size search: the algorithm against known memory limits, OOM as an outcome, a manual-
optimisation module, real CPU probes in Ray actors against a memory budget, and bad input through
the CLI."""

import math

import pytest
import torch

from microforge.platform.cli import main
from microforge.platform.errors import ConfigError
from microforge.tune import (
    BatchSizeError,
    ProbeResult,
    analytic_probe_count,
    linear_scan,
    load_recommendations,
    measure_training_step,
    parse_memory,
    search_batch_size,
)
from microforge.trainers.workload import get_workload
from microforge.tune.probe import apply_memory_budget
from microforge.tune.probe_actor import WORKLOAD_CLIP, ProbeSettings, probe_in_fresh_actor, run_probe

MiB = 2**20
DELINEATION = get_workload("delineation")


def probe_settings(workload=DELINEATION, resolution=32, **overrides):
    fields = dict(workload=workload, resolution=resolution, precision="32-true", use_gpu=False,
                  memory_budget_bytes=None, threads=1, warmup_steps=0, measure_steps=1)
    return ProbeSettings(**{**fields, **overrides})


def limit_probe(limit, calls=None):
    """A device on which batches up to ``limit`` fit; a bigger batch is a bit faster per sample."""

    def probe(batch_size):
        if calls is not None:
            calls.append(batch_size)
        if batch_size > limit:
            return ProbeResult(batch_size, "oom", message="CUDA out of memory")
        return ProbeResult(batch_size, "ok", step_time_s=0.01 + 0.001 * batch_size, peak_memory_bytes=batch_size * MiB)

    return probe


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 8, 9, 100, 127, 128, 1000])
def test_doubling_then_bisection_finds_exactly_the_largest_batch(limit):
    calls = []
    result = search_batch_size(limit_probe(limit, calls))
    assert result.max_batch == limit and not result.capped
    assert len(calls) == len(set(calls)) == len(result.probes) == analytic_probe_count(limit)
    assert len(calls) == 2 * math.floor(math.log2(limit)) + 2
    assert calls[: int(math.log2(limit)) + 2] == [2**k for k in range(int(math.log2(limit)) + 2)]
    # the original tool's linear scan finds the same batch with limit + 1 probes
    scan = linear_scan(limit_probe(limit)) if limit <= 128 else None
    if scan is not None:
        assert scan.max_batch == limit and len(scan.probes) == analytic_probe_count(limit, "linear") == limit + 1


def test_best_batch_is_the_fastest_that_fitted_and_the_cap_is_reported():
    def probe(batch_size):  # throughput peaks at 16, memory runs out above 40
        if batch_size > 40:
            return ProbeResult(batch_size, "oom")
        return ProbeResult(batch_size, "ok", step_time_s=batch_size / (100 - abs(batch_size - 16)))

    result = search_batch_size(probe)
    assert (result.max_batch, result.best_batch) == (40, 16)
    assert result.best.samples_per_s == pytest.approx(100.0)
    capped = search_batch_size(probe, max_batch=24)
    assert capped.max_batch == 24 and capped.capped
    assert [p.batch_size for p in capped.probes] == [1, 2, 4, 8, 16, 24]


def test_a_memory_budget_turns_a_peak_above_it_into_oom():
    """The CPU model: peak RSS = 500 MiB baseline + 48 MiB per sample, budget 1 GiB -> 10 fits, 11 does not."""

    def probe(batch_size):
        measured = ProbeResult(batch_size, "ok", step_time_s=0.1, peak_memory_bytes=(500 + 48 * batch_size) * MiB)
        return apply_memory_budget(measured, 1024 * MiB)

    result = search_batch_size(probe)
    assert result.max_batch == 10  # 500 + 480 <= 1024 < 500 + 528
    assert [p.batch_size for p in result.probes] == [1, 2, 4, 8, 16, 12, 10, 11]
    over = next(p for p in result.probes if p.batch_size == 11)
    assert over.status == "oom" and "exceeds the budget of 1.0 GiB" in over.message


def test_failures_other_than_oom_count_as_not_fitting_and_batch_one_must_fit():
    def probe(batch_size):
        status = "timeout" if batch_size == 8 else "error" if batch_size > 8 else "ok"
        return ProbeResult(batch_size, status, step_time_s=0.1 if status == "ok" else None)

    assert search_batch_size(probe).max_batch == 7
    with pytest.raises(BatchSizeError, match="batch size 1 runs out of memory: peak memory"):
        search_batch_size(lambda b: apply_memory_budget(ProbeResult(b, "ok", 0.1, 600 * MiB), 512 * MiB))


def oom_module(limit):
    module = DELINEATION.probe_module("tiny", 32)
    step = module.training_step

    def training_step(batch, batch_idx):
        if batch["image"].shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return step(batch, batch_idx)

    module.training_step = training_step
    return module


def test_oom_raised_inside_a_probe_is_an_outcome_and_the_search_goes_on():
    torch.set_num_threads(1)
    result = search_batch_size(
        lambda b: measure_training_step(oom_module(limit=5), b, warmup_steps=0, measure_steps=1), max_batch=8)
    assert result.max_batch == 5
    statuses = {p.batch_size: p.status for p in result.probes}
    assert statuses == {1: "ok", 2: "ok", 4: "ok", 8: "oom", 6: "oom", 5: "ok"}
    oom = next(p for p in result.probes if p.batch_size == 8)
    assert oom.message.startswith("OutOfMemoryError: CUDA out of memory") and oom.step_time_s is None
    assert all(p.step_time_s > 0 and p.peak_memory_bytes > 0 for p in result.probes if p.fits)


def test_parse_memory():
    assert parse_memory("4GiB") == 4 * 2**30
    assert parse_memory("512 MiB") == 512 * MiB
    assert parse_memory("1.5G") == 1_500_000_000
    assert parse_memory(1024) == 1024
    for bad in ("4 parsecs", "", "-1GiB", "0"):
        with pytest.raises(ConfigError):
            parse_memory(bad)


def test_a_manual_optimisation_module_is_probed_without_gradient_clipping():
    """Lightning refuses gradient clipping under manual optimisation: the probe builds its Trainer
    like a training run does, clipping only in automatic mode (even when asked to clip)."""
    from tests.tune.manual_module import MANUAL

    torch.set_num_threads(1)
    for clip in (WORKLOAD_CLIP, 1.0):
        result = run_probe(probe_settings(MANUAL, 16, gradient_clip_val=clip), "tiny", 2)
        assert result.status == "ok", result.message
        assert result.step_time_s > 0 and "gradient clipping" not in result.message
    # what a probe that ignored the optimisation mode would have met
    module = MANUAL.probe_module("tiny", 16)
    wrong = measure_training_step(module, 2, warmup_steps=0, measure_steps=1, optimization="automatic",
                                  gradient_clip_val=1.0)
    assert wrong.status == "error" and "Automatic gradient clipping is not supported" in wrong.message


def test_a_hung_probe_is_killed_after_its_timeout(ray_local):
    # importing torch and Lightning alone takes longer than 0.2 s in a fresh process
    result = probe_in_fresh_actor(probe_settings(), "tiny", 1, timeout_s=0.2, cpus=0.5)
    assert result.status == "timeout" and "killed after 0.2 s" in result.message


# The default suite probes through the CLI in tests/workloads (the manual-optimisation toy GAN).
@pytest.mark.slow
def test_small_search_through_the_cli_stores_a_recommendation_for_the_workload(ray_local, state_home, capsys):
    """Two real probes (batch 1 and 2 of the tiny U-Net at 32 px), each in a fresh actor; the old
    ``--trainer unet`` spelling names the delineation workload."""
    code = main(["tune", "batch-size", "--trainer", "unet", "--presets", "tiny", "--resolution", "32",
                 "--memory-budget", "8GiB", "--max-batch", "2", "--steps", "1", "--timeout", "300"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "delineation at 32 px, 32-true, on CPU" in out and "+: reached --max-batch" in out
    [record] = load_recommendations()
    assert (record.workload, record.preset, record.resolution, record.precision, record.device,
            record.device_memory_bytes) == ("delineation", "tiny", 32, "32-true", "cpu", 8 * 2**30)
    assert record.max_batch == 2 and record.capped and record.best_batch in (1, 2) and record.samples_per_s > 0


@pytest.mark.slow
def test_real_cpu_probes_in_actors_against_a_memory_budget(ray_local, state_home, capsys):
    """Each probe in a fresh actor process; the budget is set a little above the peak RSS of batch 1."""
    settings = probe_settings(resolution=128)
    baseline = probe_in_fresh_actor(settings, "tiny", 1, timeout_s=120, cpus=1)
    assert baseline.fits and baseline.device == "cpu"
    budget = baseline.peak_memory_bytes + 96 * MiB
    code = main(["tune", "batch-size", "--workload", "delineation", "--presets", "tiny", "--resolution", "128",
                 "--precision", "fp32", "--memory-budget", str(budget), "--max-batch", "32", "--steps", "1",
                 "--timeout", "120"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "delineation at 128 px, 32-true, on CPU" in out and "Ray dashboard:" in out
    [record] = load_recommendations()
    assert (record.device, record.device_memory_bytes, record.workload, record.preset, record.resolution,
            record.precision) == ("cpu", budget, "delineation", "tiny", 128, "32-true")
    assert 1 <= record.best_batch <= record.max_batch < 32
    assert record.peak_memory_bytes <= budget and record.samples_per_s > 0
    row = next(line.split() for line in out.splitlines() if line.split()[:2] == ["128", "tiny"])
    assert row[2] == str(record.max_batch) and row[5] == str(record.best_batch)
    assert int(row[-1]) == analytic_probe_count(record.max_batch)


def test_bad_batch_search_input_exits_2(ray_local, state_home, capsys):
    base = ["tune", "batch-size", "--workload", "delineation", "--presets", "tiny", "--precision", "fp32"]
    cases = [
        (["--resolution", "36", "--memory-budget", "4GiB"], "use a multiple of 8"),
        (["--resolution", "32", "--workload", "unett"], "unknown workload 'unett' (did you mean 'unet'?)"),
        (["--resolution", "32", "--presets", "tiny,smal", "--memory-budget", "4GiB"],
         "no preset 'smal' (did you mean 'small'?)"),
        (["--resolution", "32"], "needs a memory budget"),
        (["--resolution", "32", "--precision", "fp8", "--memory-budget", "4GiB"], "unknown precision 'fp8'"),
        (["--resolution", "32", "--memory-budget", "4 bananas"], "not a size like 4GiB"),
        (["--resolution", "32", "--memory-budget", "64MiB", "--timeout", "120"],
         "tiny at 32 px: batch size 1 runs out of memory: peak memory"),
    ]
    for extra, message in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("microforge: error: ") and message in err, (extra, err)
    assert load_recommendations() == []


@pytest.mark.gpu
def test_gpu_search_keys_recommendations_by_the_card_and_survives_cuda_oom(ray_local, state_home):
    """On a GPU: probes hold one GPU each; a budget far below the card makes CUDA OOM happen."""
    from microforge.tune import BatchSizeSearch, recommendations_from_report

    if not torch.cuda.is_available() or not ray_local.cluster_resources().get("GPU"):
        pytest.skip("needs a CUDA GPU in the Ray cluster")
    report = BatchSizeSearch(workload="delineation", presets=("tiny",), resolutions=256, precision="bf16-mixed",
                             device="gpu", memory_budget="1GiB", timeout_s=120).run()
    result = report.results["tiny", 256]
    assert report.device == torch.cuda.get_device_name(0) and report.device_memory_bytes == 2**30
    assert result.max_batch >= 1 and not result.capped
    oom = [p for p in result.probes if p.status == "oom"]
    assert oom and "OutOfMemoryError" in oom[0].message  # CUDA OOM caught in the probe, search went on
    assert all(p.peak_memory_bytes <= 2**30 for p in result.probes if p.fits)
    [rec] = recommendations_from_report(report)
    assert rec.device != "cpu" and rec.precision == "bf16-mixed"
