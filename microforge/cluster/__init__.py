"""Launch microforge (or any command) on a Ray cluster inside a Slurm allocation.

``microforge cluster submit`` renders a batch script from the template in ``templates/`` (the
Ray-on-Slurm pattern: head, readiness poll, workers, command, teardown on any exit) and submits
it; ``interactive`` runs the same launcher inside ``salloc``/``srun --pty`` around a serve command.
"""

from .jobs import JobRecord, find_job, stream_log, submit_job
from .script import render_job_script, sbatch_options
from .slurm import JobState, cancel, check_resources, job_state
from .spec import ClusterError, JobSpec, build_spec

__all__ = [
    "ClusterError",
    "JobRecord",
    "JobSpec",
    "JobState",
    "build_spec",
    "cancel",
    "check_resources",
    "find_job",
    "job_state",
    "render_job_script",
    "sbatch_options",
    "stream_log",
    "submit_job",
]
