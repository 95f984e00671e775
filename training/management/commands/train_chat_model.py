"""`manage.py train_chat_model`: the chat model's whole chain here, with a progress bar, recorded as a training run."""

import json

from django.core.management.base import BaseCommand

from training.management.run_here import command_run
from training.models import ModelKind

SHOWN = [
    ("val_perplexity", "perplexity"),
    ("distinct_1", "distinct-1"),
    ("distinct_2", "distinct-2"),
    ("repetition_rate", "repetition"),
    ("coherence", "coherence"),
    ("groundedness", "groundedness"),
]


class Command(BaseCommand):
    help = "Train a chat model (corpus, tokenizer, pre-training, SFT, evaluation) and register it as a model version."

    def add_arguments(self, parser):
        parser.add_argument("--preset", choices=["tiny", "small", "base"], default="small")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dialogues", type=int, default=None, help="Synthetic SFT conversations.")
        parser.add_argument("--heldout", type=int, default=None, help="Held-out questions for the evaluation.")
        parser.add_argument("--activate", action="store_true", help="Make the new version the active chat model.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (log lines only).")

    def handle(self, *args, **options):
        parameters = {"preset": options["preset"], "seed": options["seed"]}
        parameters |= {k: options[k] for k in ("dialogues", "heldout") if options[k] is not None}
        run, version = command_run(
            self,
            kind=ModelKind.CHAT_LM,
            parameters=parameters,
            activate=options["activate"],
            no_progress=options["no_progress"],
            failure=lambda run: f"\n{run.log[-3000:]}",
        )
        metrics = version.metrics
        figures = ", ".join(
            f"{label} {metrics[key]:.3f}" if isinstance(metrics.get(key), float) else f"{label} —"
            for key, label in SHOWN
        )
        self.stdout.write(f"Training run {run.pk}: model version {version.pk} {version.name} ({version.status})")
        self.stdout.write(f"Metrics: {figures}")
        self.stdout.write(f"Dataset hash: {metrics.get('dataset_hash')}; took {metrics.get('seconds', 0):.0f} s")
        self.stdout.write(
            json.dumps({k: metrics.get(k) for k, _ in SHOWN} | {"heldout_questions": metrics.get("heldout_questions")})
        )
        self.stdout.write(f"Model: {version.artifact_path}")
