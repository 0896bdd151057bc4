"""The epoch feed: the next epoch rendered while the current one trains, the per-epoch curriculum,
byte-identical samples whatever the data and training workers, resume, and --data-workers."""

import itertools
import json
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from microforge.datasets.blobs import render_blob_batch
from microforge.platform.errors import ConfigError
from microforge.trainers import EpochContext, SyntheticData, get_workload, load_job
from microforge.trainers.data import RenderedSplit, rebatch
from microforge.trainers.feed import EpochFeed, default_data_workers, recommended_data_workers
from microforge.trainers.runs import RUN_FILE
from microforge.trainers.unet.lightning import curriculum_settings

RENDERER = "microforge.datasets.blobs:render_blob_batch"
RECORDING = "tests.trainers.test_feed:recording_render"
CURRICULUM = "microforge.trainers.unet.lightning:curriculum_settings"


def recording_render(config, seed, indices, **kwargs):
    """``render_blob_batch`` that appends ``{"indices", "kwargs"}`` to the file ``config["log"]``
    when it starts (it runs in Ray Data tasks, in other processes)."""
    config = dict(config)
    with open(config.pop("log"), "a") as log:
        log.write(json.dumps({"indices": [int(i) for i in indices], "kwargs": kwargs}) + "\n")
    return render_blob_batch(config, seed, indices, **kwargs)


def timed_render(config, seed, indices, **kwargs):
    """``render_blob_batch`` that holds each block ``config["hold"]`` s and appends its
    ``[start, end]`` (wall clock) to the file ``config["log"]``."""
    config = dict(config)
    log, hold = config.pop("log"), config.pop("hold")
    started = time.time()
    time.sleep(hold)
    out = render_blob_batch(config, seed, indices, **kwargs)
    with open(log, "a") as f:
        f.write(json.dumps([started, time.time()]) + "\n")
    return out


def rendered(log_path):
    return [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []


def feed_of(data, total_epochs, batch_size, rank=0, world=1, data_workers=None, **kwargs):
    return EpochFeed(lambda e: data.epoch_dataset("train", EpochContext(e, total_epochs, rank, world, data_workers)),
                     total_epochs, batch_size, **kwargs)


def wait_for(condition, what, timeout=180.0):
    """Poll ``condition`` (behaviour, not timing: the timeout only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def as_bytes(batches):
    """{index: {column: bytes}} of the rows of ``batches``."""
    out = {}
    for batch in batches:
        for row, index in enumerate(batch["index"].tolist()):
            out[int(index)] = {k: v[row].numpy().tobytes() for k, v in batch.items()}
    return out


def test_next_epoch_renders_while_the_current_one_is_read_with_its_own_curriculum(ray_local, tmp_path):
    log = tmp_path / "renders.jsonl"
    data = SyntheticData(RECORDING, {"size": 32, "log": str(log)}, seed=3, train_samples=8, val_samples=2,
                         schedule=CURRICULUM, rows_per_task=2)
    feed = feed_of(data, 3, batch_size=2, data_workers=1)
    epoch0 = feed.epoch(0)
    first = [next(epoch0) for _ in range(3)]  # 4 batches in the epoch: the last one is not read yet
    epoch1_indices = set(range(2 + 8, 2 + 16))
    wait_for(lambda: any(set(r["indices"]) & epoch1_indices for r in rendered(log)),
             "epoch 1 to render while epoch 0 is being read")
    assert [e for e, _ in feed.started[:2]] == [0, 1]
    first += list(epoch0)
    second = list(feed.epoch(1))
    assert feed.restarts == 0 and len(first) == len(second) == 4
    # every epoch gets its indices and its curriculum: the bytes of a direct render with that epoch's settings
    for epoch, batches in ((0, first), (1, second)):
        indices = list(range(2 + 8 * epoch, 2 + 8 * (epoch + 1)))
        assert [int(i) for b in batches for i in b["index"]] == indices
        expected = render_blob_batch({"size": 32}, 3, indices, **curriculum_settings(epoch, 3))
        for key in ("image", "mask", "clean"):
            assert np.array_equal(torch.cat([b[key] for b in batches]).numpy(), expected[key]), (epoch, key)
    kwargs = {tuple(r["kwargs"].items()) for r in rendered(log) if set(r["indices"]) & epoch1_indices}
    assert kwargs == {tuple(curriculum_settings(1, 3).items())} != {tuple(curriculum_settings(0, 3).items())}
    feed.close()


def test_epoch_bytes_are_the_same_whatever_the_data_and_training_workers(ray_local):
    def epochs(data_workers, world, rows_per_task):
        data = SyntheticData(RENDERER, {"size": 32}, seed=5, train_samples=8, val_samples=2, schedule=CURRICULUM,
                             rows_per_task=rows_per_task)
        out = {}
        for rank in range(world):
            feed = feed_of(data, 2, batch_size=3, rank=rank, world=world, data_workers=data_workers)
            for epoch in range(2):
                out.update({(epoch, i): row for i, row in as_bytes(feed.epoch(epoch)).items()})
            feed.close()
        return out

    one = epochs(data_workers=1, world=1, rows_per_task=4)
    assert sorted(one) == [(e, i) for e in range(2) for i in range(2 + 8 * e, 10 + 8 * e)]
    assert epochs(data_workers=3, world=2, rows_per_task=3) == one
    direct = render_blob_batch({"size": 32}, 5, [11], **curriculum_settings(1, 2))
    assert one[(1, 11)]["image"] == direct["image"][0].tobytes()


@pytest.mark.parametrize("data_workers", [1, 2])
def test_rendered_split_renders_at_most_data_workers_blocks_at_a_time(ray_local, tmp_path, data_workers):
    log = tmp_path / "spans.jsonl"
    split = RenderedSplit("tests.trainers.test_feed:timed_render", {"size": 32, "log": str(log), "hold": 0.3},
                          seed=1, rows=12, start=100, stride=2, rows_per_task=2, data_workers=data_workers)
    batches = list(split.iter_batches(5))
    assert [len(b["index"]) for b in batches] == [5, 5, 2]
    assert np.concatenate([b["index"] for b in batches]).tolist() == list(range(100, 124, 2))
    spans = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(spans) == 6
    most = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert most <= data_workers


def test_rendered_split_renders_outside_the_callers_placement_group(ray_local):
    """A training worker of a Tune trial runs in a placement group that captures child tasks;
    its render tasks must not be squeezed into that group's bundle."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    split = RenderedSplit(RENDERER, {"size": 32}, seed=1, rows=4, rows_per_task=2, data_workers=1)

    @ray_local.remote(num_cpus=0.5)
    def read_in_group():
        return [int(i) for b in split.iter_batches(4) for i in b["index"]]

    group = placement_group([{"CPU": 0.5}])
    ray_local.get(group.ready())
    try:
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)
        assert ray_local.get(read_in_group.options(scheduling_strategy=strategy).remote()) == [0, 1, 2, 3]
    finally:
        remove_placement_group(group)


def test_rebatch_regroups_blocks_in_order_into_writable_batches():
    blocks = [{"x": np.arange(a, b, dtype=np.float32).reshape(-1, 1), "i": np.arange(a, b)} for a, b in
              ((0, 3), (3, 6), (6, 8))]
    for block in blocks:
        for v in block.values():
            v.flags.writeable = False  # as arrays read from Ray's object store
    for size, lengths in ((4, [4, 4]), (5, [5, 3]), (8, [8]), (20, [8])):
        batches = list(rebatch(iter(blocks), size))
        assert [len(b["i"]) for b in batches] == lengths
        assert np.concatenate([b["i"] for b in batches]).tolist() == list(range(8))
        assert all(b["x"].flags.writeable and b["x"].shape[1:] == (1,) for b in batches)


def test_a_resumed_feed_starts_at_its_epoch_and_restarts_when_read_out_of_order(ray_local):
    data = SyntheticData(RENDERER, {"size": 32}, seed=1, train_samples=4, val_samples=0, rows_per_task=2)
    feed = feed_of(data, 3, batch_size=2)
    assert [int(i) for b in feed.epoch(1) for i in b["index"]] == [4, 5, 6, 7]  # resumed after epoch 0
    assert feed.started[0][0] == 1 and feed.restarts == 0
    partial = feed.epoch(2)
    next(partial)  # an epoch cut short (max_steps): epoch 2 again starts over
    assert [int(i) for b in feed.epoch(2) for i in b["index"]] == [8, 9, 10, 11]
    assert feed.restarts == 1 and 0 not in [e for e, _ in feed.started]
    with pytest.raises(ValueError, match=r"epoch 3 is not in \[0, 3\)"):
        feed.epoch(3)
    feed.close()


def test_render_errors_reach_the_training_loop(ray_local):
    data = SyntheticData(RENDERER, {"size": 32, "blobs_per_image": "many"}, seed=1, train_samples=2)
    with pytest.raises(Exception, match="blobs_per_image"):
        list(feed_of(data, 1, batch_size=2).epoch(0))


class FakeDataset:
    """A stand-in for a Ray Dataset of ``rows`` (index) rows."""

    def __init__(self, epoch, rows=6):
        self.epoch, self.rows = epoch, rows

    def iter_torch_batches(self, batch_size, **_):
        for start in range(0, self.rows, batch_size):
            index = torch.arange(start, min(start + batch_size, self.rows)) + 100 * self.epoch
            yield {"index": index, "x": torch.ones(len(index), 1000)}


def test_feed_buffer_is_bounded_and_epochs_chain_without_ray():
    feed = EpochFeed(FakeDataset, 2, batch_size=2, buffer_bytes=1)  # the minimum: 2 batches ahead
    epoch0 = feed.epoch(0)
    wait_for(lambda: feed._run.batches == 2, "the buffer to fill")
    time.sleep(0.2)
    assert feed._run.batches == 2 and [e for e, _ in feed.started] == [0]  # bounded: no more
    # Lightning takes len(loader) batches and never asks for the end of the epoch
    assert [int(i) for b in itertools.islice(epoch0, 3) for i in b["index"]] == list(range(6))
    wait_for(lambda: [e for e, _ in feed.started] == [0, 1], "epoch 1 to start")
    assert [int(i) for b in itertools.islice(feed.epoch(1), 3) for i in b["index"]] == list(range(100, 106))
    assert feed.restarts == 0
    feed.close()


def test_data_worker_numbers():
    assert recommended_data_workers(0.010, 0.002) == 7  # 1.25 x 5
    assert recommended_data_workers(0.001, 0.002) == 1
    assert default_data_workers(16, 1, 1) == 15
    assert default_data_workers(2, 1, 2) == 1  # never 0
    assert default_data_workers(64, 4, 4) == 15


def test_data_workers_is_a_job_field_and_flag(tmp_path, capsys):
    from microforge.platform.cli import main

    job = get_workload("delineation").job({"image_size": 32, "train_samples": 8}, epochs=2, runs_dir=tmp_path,
                                          batch_size=4, name="r1", data_workers=3)
    run_dir = tmp_path / "r1"
    run_dir.mkdir()
    (run_dir / RUN_FILE).write_text(json.dumps({**job.record(), "name": "r1", "status": "finished"}))
    assert load_job("r1", tmp_path).data_workers == 3
    record = job.record()
    del record["data_workers"]  # a run recorded before the field
    (run_dir / RUN_FILE).write_text(json.dumps({**record, "name": "r1", "status": "finished"}))
    assert load_job("r1", tmp_path).data_workers is None
    with pytest.raises(ConfigError, match="data_workers must be an integer >= 1"):
        replace(job, data_workers=0).check()
    assert main(["train", "delineation", "--data-workers", "0", "--size", "32", "--out", str(tmp_path)]) == 2
    assert "data_workers must be an integer >= 1" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_feed_delivers_the_same_batches_on_the_device(ray_local):
    data = SyntheticData(RENDERER, {"size": 32}, seed=2, train_samples=8, schedule=CURRICULUM)
    host = [b for e in range(2) for b in feed_of(data, 2, batch_size=4).epoch(e)]
    feed = feed_of(data, 2, batch_size=4, device="cuda")
    device = [b for e in range(2) for b in feed.epoch(e)]
    assert all(v.is_cuda for b in device for v in b.values())
    for a, b in zip(host, device):
        assert all(torch.equal(a[k], b[k].cpu()) for k in a)
    feed.close()
