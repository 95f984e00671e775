"""A training run executed by a management command: parameters checked, a progress bar, the version it made."""

from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm
from transformers.utils import logging as hf_logging

from training.models import ModelVersion, TrainingRun
from training.services.registry import model_version_activate
from training.services.runs import PIPELINES, TrainingRunError, training_run_here


def run_progress_bar(command, *, disable: bool) -> tuple[tqdm, Callable[[float, str, str], None]]:
    """A bar on the command's stderr and the run observer that drives it (log lines go to stdout)."""
    bar = tqdm(total=100, unit="%", disable=disable, file=command.stderr._out, dynamic_ncols=True)
    shown = {"phase": ""}

    def observe(fraction: float, line: str, phase: str) -> None:
        if phase and phase != shown["phase"]:
            shown["phase"] = phase
            bar.set_description(phase)
        done = round(100 * fraction)
        if done > bar.n:
            bar.update(done - bar.n)
        if line:
            bar.write(line, file=command.stdout._out)

    return bar, observe


def command_run(
    command: BaseCommand,
    *,
    kind: str,
    parameters: dict,
    activate: bool,
    no_progress: bool,
    failure: Callable[[TrainingRun], str],
) -> tuple[TrainingRun, ModelVersion]:
    """Run a `kind` training run here and return it with its model version, activated when asked.

    Bad parameters, and a run that did not succeed (`failure(run)` says how, after its status), are
    CommandErrors.
    """
    try:
        PIPELINES[kind].check(parameters)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    hf_logging.disable_progress_bar()  # the run's own bar is the one to watch
    bar, observe = run_progress_bar(command, disable=no_progress)
    try:
        run = training_run_here(kind=kind, parameters=parameters, user_id=None, observer=observe)
    except TrainingRunError as exc:
        raise CommandError(str(exc)) from None
    finally:
        bar.close()
    version = run.model_versions.order_by("-id").first()
    if run.status != TrainingRun.Status.SUCCEEDED or version is None:
        raise CommandError(f"Training run {run.pk} ended {run.status}:{failure(run)}")
    if activate:
        version = model_version_activate(version_id=version.pk, user_id=None)
    return run, version
