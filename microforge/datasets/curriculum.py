"""Noise curriculum: the synthesis settings of each epoch, harder as training goes on.

A run is split into phases by the fraction of it already done, ``f = epoch / total_epochs``
(``epoch`` counted from 0, so ``f`` is in [0, 1)). A phase covers ``[previous end, end)``: the
first epoch is always the first phase, an epoch that starts exactly on a boundary belongs to the
later phase, and phases shorter than one epoch are skipped when there are few epochs. Default
table (the reference schedule):

=========  ==========  ===========  ==========
phase      run         noise_scale  mixed_prob
=========  ==========  ===========  ==========
easy       0 - 6%      0.10         0.0
medium     6 - 25%     0.35         0.2
hard       25 - 56%    0.70         0.4
extreme    56 - 100%   1.00         0.6
=========  ==========  ===========  ==========

For example 2 epochs give easy, hard; 4 give easy, hard, hard, extreme; 10 give easy, medium,
medium, hard, hard, hard, extreme x4.
"""

from __future__ import annotations

from numbers import Integral

from pydantic import Field, field_validator

from microforge.platform.config import ConfigModel
from microforge.platform.errors import ConfigError

__all__ = ["DEFAULT_PHASES", "Curriculum", "Phase", "curriculum_phase"]


class Phase(ConfigModel):
    """One curriculum phase: synthesis settings used until ``end`` (a fraction of the run)."""

    name: str = Field(min_length=1, description="Phase name, e.g. 'easy'.")
    end: float = Field(gt=0.0, le=1.0, description="Fraction of the run at which the phase ends (exclusive).")
    noise_scale: float = Field(ge=0.0, le=1.0, description="noise_scale passed to the renderer.")
    mixed_prob: float = Field(ge=0.0, le=1.0, description="mixed_prob passed to the renderer.")


DEFAULT_PHASES: tuple[Phase, ...] = (
    Phase(name="easy", end=0.06, noise_scale=0.10, mixed_prob=0.0),
    Phase(name="medium", end=0.25, noise_scale=0.35, mixed_prob=0.2),
    Phase(name="hard", end=0.56, noise_scale=0.70, mixed_prob=0.4),
    Phase(name="extreme", end=1.0, noise_scale=1.0, mixed_prob=0.6),
)


class Curriculum(ConfigModel):
    """A phase table: ends strictly increasing, the last at 1.0, names unique."""

    phases: tuple[Phase, ...] = Field(DEFAULT_PHASES, description="Phases in order.")

    @field_validator("phases")
    @classmethod
    def _check_phases(cls, phases: tuple[Phase, ...]) -> tuple[Phase, ...]:
        if not phases:
            raise ValueError("at least one phase is needed")
        ends = [p.end for p in phases]
        if any(b <= a for a, b in zip(ends, ends[1:])):
            raise ValueError(f"phase ends must be strictly increasing, got {ends}")
        if ends[-1] != 1.0:
            raise ValueError(f"the last phase must end at 1.0 (the end of the run), got {ends[-1]}")
        names = [p.name for p in phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must be unique, got {names}")
        return phases

    def phase(self, epoch: int, total_epochs: int) -> Phase:
        """The phase of ``epoch`` (0-based) in a run of ``total_epochs``.

        Raises:
            ConfigError: ``total_epochs < 1`` or ``epoch`` outside ``[0, total_epochs)``.
        """
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, Integral) or total_epochs < 1:
            raise ConfigError(f"total_epochs must be a positive integer, got {total_epochs!r}")
        if isinstance(epoch, bool) or not isinstance(epoch, Integral) or not 0 <= epoch < total_epochs:
            raise ConfigError(f"epoch must be an integer in [0, {total_epochs}), got {epoch!r}")
        fraction = int(epoch) / int(total_epochs)
        return next(p for p in self.phases if fraction < p.end)


def curriculum_phase(epoch: int, total_epochs: int, curriculum: Curriculum | None = None) -> Phase:
    """The phase of ``epoch`` (0-based) of ``total_epochs`` under ``curriculum`` (default table).

    Raises:
        ConfigError: see :meth:`Curriculum.phase`.
    """
    return (curriculum or Curriculum()).phase(epoch, total_epochs)
