"""The progress bar training commands show while a run executes here."""

from collections.abc import Callable

from tqdm import tqdm


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
