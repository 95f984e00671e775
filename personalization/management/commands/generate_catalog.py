import time
from datetime import UTC, datetime
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from personalization.demo.generate import GenerateError, catalog_generate


class Command(BaseCommand):
    help = (
        "Generate a synthetic catalog with planted structure for benchmarks: Zipf popularity, readers with "
        "1-3 favourite sections or tags, recency decay and trending tags. Deterministic for a seed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--items", type=int, default=10_000, help="Catalog size (default 10,000).")
        parser.add_argument("--readers", type=int, default=1_000, help="Synthetic readers (default 1,000).")
        parser.add_argument("--interactions", type=int, default=200_000, help="Interaction rows (default 200,000).")
        parser.add_argument("--seed", type=int, default=0, help="Random seed (default 0).")
        parser.add_argument("--days", type=int, default=365, help="Publication span before --end (default 365).")
        parser.add_argument(
            "--end", default=None, help="YYYY-MM-DD (UTC); nothing is published or read after it. Default: today."
        )
        parser.add_argument("--replace", action="store_true", help="Delete all generated data first (every seed).")
        parser.add_argument("--truth", type=Path, default=None, help="Write the planted structure as JSON here.")

    def handle(self, *args, **options) -> None:
        end = None
        if options["end"]:
            try:
                end = datetime.strptime(options["end"], "%Y-%m-%d").replace(tzinfo=UTC)
            except ValueError:
                raise CommandError(f"--end must be a date as YYYY-MM-DD; got {options['end']!r}.") from None
        started = time.monotonic()
        try:
            summary = catalog_generate(
                items=options["items"],
                readers=options["readers"],
                interactions=options["interactions"],
                seed=options["seed"],
                days=options["days"],
                end=end,
                replace=options["replace"],
                truth_path=options["truth"],
                progress=self._progress,
            )
        except GenerateError as exc:
            raise CommandError(str(exc)) from exc
        if summary["deleted"]:
            d = summary["deleted"]
            self.stdout.write(
                f"Deleted earlier generated data: {d['items']:,} items, {d['readers']:,} readers, "
                f"{d['interactions']:,} interactions."
            )
        verb = "Generated" if summary["written"] else "Already there, nothing written:"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {summary['items']:,} items, {summary['readers']:,} readers and "
                f"{summary['interactions']:,} interactions for seed {summary['seed']} "
                f"in {time.monotonic() - started:.1f} s."
            )
        )
        self.stdout.write(
            f"Planted: top 10% of items hold {summary['top_decile_share']:.0%} of interactions; "
            f"{summary['affinity_share']:.0%} fall in readers' favourites; trending: {', '.join(summary['trending'])}."
        )
        if options["truth"]:
            self.stdout.write(f"Truth written to {options['truth']}")

    def _progress(self, label: str, done: int, total: int) -> None:
        """One line per stage, redrawn in place on a terminal, printed once when done otherwise."""
        line = f"{label:>12}: {done:>10,} / {total:,} ({done / max(total, 1):4.0%})"
        if self.stdout.isatty():
            self.stdout.write("\r" + line, ending="\n" if done >= total else "")
            self.stdout.flush()
        elif done >= total:
            self.stdout.write(line)
