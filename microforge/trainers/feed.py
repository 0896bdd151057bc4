"""Feed a training loop: batches of per-epoch splits produced ahead, across epoch boundaries.

An :class:`EpochFeed` turns ``open_dataset(epoch)`` (a Ray Dataset, or a
:class:`~microforge.trainers.data.RenderedSplit` such as
:meth:`~microforge.trainers.data.SyntheticData.epoch_dataset` of one rank) into batches per
epoch. One background thread runs the epochs' datasets back to back: as soon as the last batch
of epoch ``e`` has been fetched it builds and starts epoch ``e + 1``'s dataset, while the training
loop is still working through the batches of ``e`` held in a bounded buffer. Rendering itself
runs in Ray tasks (other processes, at most ``data_workers`` at a time per feed: see
:func:`default_data_workers`); Ray's worker processes are reused, so no actor or coordinator
starts per epoch. Each epoch's dataset is still built from its own :class:`EpochContext`, so a
per-epoch curriculum applies exactly as before, and every sample stays a function of
``(split, epoch, i)``: the bytes do not depend on the number of data workers, of training
workers, on the buffer or on the timing.

On a CUDA device, batches are put in pinned host memory and are copied to the
device on a side stream a couple of batches ahead of use.

A feed starts at the first epoch asked for (after a resume, the epoch Lightning restored) and
then prefetches the following one; asking for any epoch other than the one after an epoch read
to its end (an epoch cut short by ``max_steps`` or ``limit_train_batches``, or a repeated epoch)
restarts it there, so what an epoch yields never depends on what was prefetched.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .data import RenderedSplit

if TYPE_CHECKING:
    import ray.data
    import torch

__all__ = ["DEFAULT_BUFFER_BYTES", "DEVICE_AHEAD", "EpochFeed", "default_data_workers", "recommended_data_workers"]

# Host memory the batches buffered ahead of the training loop may take (per feed); the buffer
# holds between 2 and 64 batches. At 256 px a blob batch of 8 (image, clean, mask) is ~6 MiB:
# 40 batches, ahead by ~0.7 s of an H100 step at 451 samples/s, which hides the start of the
# next epoch's dataset.
DEFAULT_BUFFER_BYTES = 256 * 2**20
MIN_BUFFER_BATCHES, MAX_BUFFER_BATCHES = 2, 64
# Batches copied to the device ahead of the one in use.
DEVICE_AHEAD = 2
# Data workers planned per unit of the render:step cost ratio (room for noise and slow samples).
HEADROOM = 1.25

_END = object()


def recommended_data_workers(render_seconds_per_sample: float, step_seconds_per_sample: float,
                             headroom: float = HEADROOM) -> int:
    """Data workers that render as fast as the training step consumes: ``ceil(headroom x render / step)``.

    ``render_seconds_per_sample`` is one data worker's render time per sample (the benchmark's
    pipeline-alone rate with one data worker, inverted); ``step_seconds_per_sample`` the training
    step's time per sample with data already on the device. ``benchmarks/feed_rate.py`` measures
    both and prints this number.
    """
    if render_seconds_per_sample <= 0 or step_seconds_per_sample <= 0:
        raise ValueError("render and step seconds per sample must be > 0")
    return max(1, math.ceil(headroom * render_seconds_per_sample / step_seconds_per_sample - 1e-9))


def default_data_workers(cluster_cpus: float, training_cpus: float, training_workers: int,
                         cpus_per_task: float = 1.0) -> int:
    """Data workers per training worker when ``--data-workers`` is not given: every CPU the
    training workers leave free, shared between them (at least 1).

    This is the most any render:step ratio can use; a data worker is a Ray Data task slot, not a
    process held for the run, so the slots a fast enough renderer does not need stay free. Set
    ``--data-workers`` to :func:`recommended_data_workers` of the measured ratio to leave the
    rest of a shared cluster to others.
    """
    spare = max(0.0, cluster_cpus - training_cpus) / max(1, training_workers)
    return max(1, int(math.floor(spare / cpus_per_task + 1e-9)))


class _Run:
    """One producer thread's output: (epoch, batch | _END | exception) items, bounded in bytes."""

    def __init__(self, start: int, budget_bytes: int) -> None:
        self.start = start
        self.items: collections.deque = collections.deque()
        self.batches = 0  # batches in ``items`` (end markers and errors do not count)
        self.limit: int | None = None  # set from the first batch's size
        self.budget_bytes = budget_bytes
        self.cond = threading.Condition()
        self.stop = threading.Event()

    def put(self, epoch: int | None, item: Any, nbytes: int = 0) -> bool:
        """Append an item, waiting while the buffer is full; False once the run is stopped."""
        is_batch = item is not _END and not isinstance(item, BaseException)
        with self.cond:
            if is_batch and self.limit is None:
                self.limit = min(MAX_BUFFER_BATCHES, max(MIN_BUFFER_BATCHES, self.budget_bytes // max(1, nbytes)))
            while is_batch and self.batches >= (self.limit or 1) and not self.stop.is_set():
                self.cond.wait(0.5)
            if self.stop.is_set():
                return False
            self.items.append((epoch, item))
            self.batches += is_batch
            self.cond.notify_all()
            return True

    def get(self) -> tuple[int | None, Any]:
        with self.cond:
            while not self.items:
                if self.stop.is_set():
                    raise RuntimeError("the feed was closed")
                self.cond.wait(0.5)
            epoch, item = self.items.popleft()
            if item is not _END and not isinstance(item, BaseException):
                self.batches -= 1
            self.cond.notify_all()
            return epoch, item

    def unget(self, epoch: int | None, item: Any) -> None:
        """Put back an end marker or error taken by :meth:`get`."""
        with self.cond:
            self.items.appendleft((epoch, item))
            self.cond.notify_all()

    def cancel(self) -> None:
        self.stop.set()
        with self.cond:
            self.items.clear()
            self.cond.notify_all()


def _nbytes(batch: Any) -> int:
    if isinstance(batch, dict):
        return sum(_nbytes(v) for v in batch.values())
    return int(batch.numel() * batch.element_size()) if hasattr(batch, "element_size") else 0


class EpochFeed:
    """Batches of one rank's per-epoch split, the next epoch produced while this one trains.

    Args:
        open_dataset: ``open_dataset(epoch) -> ray.data.Dataset | RenderedSplit``, this rank's rows
            of ``epoch``.
        total_epochs: epochs of the run (nothing is prefetched past the last).
        batch_size: rows per batch (the last batch of an epoch may be smaller).
        device: where batches are delivered: None or a CPU device keeps them on the host; a CUDA
            device gets pinned batches copied on a side stream :data:`DEVICE_AHEAD` ahead of use.
        buffer_bytes: host memory of the batches buffered ahead (2 to 64 batches).
        prefetch_batches: Ray Data's own prefetch inside the producer thread.

    ``started`` lists ``(epoch, time.monotonic())`` of every epoch dataset started, and
    ``restarts`` counts the times the feed had to start over (see the module doc).
    """

    def __init__(self, open_dataset: Callable[[int], "ray.data.Dataset"], total_epochs: int, batch_size: int, *,
                 device: "torch.device | str | None" = None, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 prefetch_batches: int = 2) -> None:
        import torch

        self._open_dataset = open_dataset
        self.total_epochs = total_epochs
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else None
        self._cuda = self.device is not None and self.device.type == "cuda"
        self.buffer_bytes = buffer_bytes
        self.prefetch_batches = prefetch_batches
        self.started: list[tuple[int, float]] = []
        self.restarts = 0
        self._run: _Run | None = None
        self._next: int | None = None  # the epoch the running producer delivers next, if read in order
        self._reading: int | None = None  # the epoch opened last

    # -- producer --------------------------------------------------------------------------------

    def _produce(self, run: _Run) -> None:
        try:
            for epoch in range(run.start, self.total_epochs):
                if run.stop.is_set():
                    return
                dataset = self._open_dataset(epoch)
                self.started.append((epoch, time.monotonic()))
                iterator = iter(self._batches(dataset))
                try:
                    for batch in iterator:
                        if not run.put(epoch, batch, _nbytes(batch)):
                            return
                finally:
                    close = getattr(iterator, "close", None)
                    if close is not None:
                        close()
                if not run.put(epoch, _END):
                    return
        except BaseException as exc:  # handed to the training loop, raised where it reads
            run.put(None, exc)

    def _batches(self, dataset: "ray.data.Dataset | RenderedSplit") -> Iterator[Any]:
        if isinstance(dataset, RenderedSplit):
            import torch

            pin = self._cuda
            return ({k: (torch.from_numpy(v).pin_memory() if pin else torch.from_numpy(v)) for k, v in batch.items()}
                    for batch in dataset.iter_batches(self.batch_size))
        return dataset.iter_torch_batches(batch_size=self.batch_size, prefetch_batches=self.prefetch_batches,
                                          device="cpu", pin_memory=self._cuda, drop_last=False)

    def _start(self, epoch: int) -> None:
        if self._run is not None:
            self._run.cancel()
            self.restarts += 1
        self._run = _Run(epoch, self.buffer_bytes)
        threading.Thread(target=self._produce, args=(self._run,), name=f"microforge-feed-{epoch}", daemon=True).start()
        self._next = epoch

    # -- consumer --------------------------------------------------------------------------------

    def _host_batches(self, run: _Run, epoch: int) -> Iterator[Any]:
        while True:
            got, item = run.get()
            if isinstance(item, BaseException):
                raise item
            if got != epoch:
                raise RuntimeError(f"feed delivered epoch {got} where epoch {epoch} was expected")
            if item is _END:
                if self._run is run:
                    self._next = epoch + 1
                return
            yield item

    def epoch(self, epoch: int) -> Iterator[Any]:
        """The batches of ``epoch``, in order; the feed starts (or goes on) when this is called.

        Raises:
            ValueError: an epoch outside ``[0, total_epochs)``.
            Exception: (while iterating) whatever building or rendering the dataset raised.
        """
        if not 0 <= epoch < self.total_epochs:
            raise ValueError(f"epoch {epoch} is not in [0, {self.total_epochs})")
        if self._run is not None and self._next is None and self._reading == epoch - 1:
            self._settle(epoch - 1)
        if self._run is None or self._next != epoch:
            self._start(epoch)
        run, self._next, self._reading = self._run, None, epoch  # _next: set when the epoch's end is read
        return self._deliver(run, epoch)

    def _settle(self, previous: int) -> None:
        """Was ``previous`` read to its last batch? Lightning takes ``len(loader)`` batches and never
        asks for the end, so the next item tells: the end marker (go on with the prefetched epoch)
        or a batch (an epoch cut short: start over)."""
        got, item = self._run.get()
        if got == previous and item is _END:
            self._next = previous + 1
        elif isinstance(item, BaseException):
            self._run.unget(got, item)  # raised where the next epoch reads
            self._next = previous + 1

    def _deliver(self, run: _Run, epoch: int) -> Iterator[Any]:
        batches = self._host_batches(run, epoch)
        if self._cuda:
            batches = _on_device(batches, self.device)
        yield from batches

    def close(self) -> None:
        """Stop producing (what is being rendered is dropped)."""
        if self._run is not None:
            self._run.cancel()
            self._run, self._next = None, None


def _on_device(batches: Iterator[Any], device: "torch.device") -> Iterator[Any]:
    """Copy (pinned) batches to ``device`` on a side stream, :data:`DEVICE_AHEAD` ahead of use."""
    import torch

    stream = torch.cuda.Stream(device)
    pending: collections.deque = collections.deque()

    def move(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value

    def ready(batch: Any, event: "torch.cuda.Event") -> Any:
        current = torch.cuda.current_stream(device)
        current.wait_event(event)  # the training stream waits for the copy, the host does not

        def mark(value: Any) -> None:
            if isinstance(value, dict):
                for v in value.values():
                    mark(v)
            elif isinstance(value, torch.Tensor):
                value.record_stream(current)  # memory made on the side stream, used on this one

        mark(batch)
        return batch

    for batch in batches:
        with torch.cuda.stream(stream):
            moved = move(batch)
            event = torch.cuda.Event()
            event.record(stream)
        pending.append((moved, event))
        if len(pending) > DEVICE_AHEAD:
            yield ready(*pending.popleft())
    while pending:
        yield ready(*pending.popleft())
