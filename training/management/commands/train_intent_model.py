"""`manage.py train_intent_model`: the intent pipelines trained and compared here, with a progress bar, as a run."""

from django.core.management.base import BaseCommand

from training.management.run_here import command_run
from training.models import ModelKind


class Command(BaseCommand):
    help = "Train intent classifiers on the active intents' examples, compare them and register the best."

    def add_arguments(self, parser):
        from training.pipelines.intent_classifiers import SCOPE_SCORES  # torch and scikit-learn: only when run

        parser.add_argument(
            "--pipelines",
            default="tfidf,finetuned,ensemble",
            help="Comma-separated: tfidf, embedding, finetuned, ensemble.",
        )
        parser.add_argument("--epochs", type=float, default=None, help="Fine-tuning epochs.")
        parser.add_argument(
            "--objective", choices=["classification", "contrastive"], default=None, help="Fine-tuning loss."
        )
        parser.add_argument("--kfold", type=int, default=0, help="k-fold cross-validation of the best pipeline.")
        parser.add_argument(
            "--encoder",
            default="",
            help="A packaged encoder (all-MiniLM-L6-v2, the default, or all-mpnet-base-v2) or a local folder.",
        )
        parser.add_argument("--int8", action="store_true", help="Deploy the encoder with int8 weights.")
        parser.add_argument(
            "--length-grouped",
            action="store_true",
            help="Fine-tune on batches of similar length (about 40%% less time a step on short messages).",
        )
        parser.add_argument(
            "--oos-score",
            choices=SCOPE_SCORES,
            default=None,
            help="What a message is out of scope below (default: auto, the one validation prefers).",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--activate", action="store_true", help="Make the new version the active intent model.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (log lines only).")

    def handle(self, *args, **options):
        parameters = {
            "pipelines": [p.strip() for p in options["pipelines"].split(",") if p.strip()],
            "kfold": options["kfold"],
            "encoder": options["encoder"],
            "int8": options["int8"],
            "length_grouped": options["length_grouped"],
            "seed": options["seed"],
        }
        parameters |= {k: options[k] for k in ("epochs", "objective", "oos_score") if options[k] is not None}
        run, version = command_run(
            self,
            kind=ModelKind.INTENT,
            parameters=parameters,
            activate=options["activate"],
            no_progress=options["no_progress"],
            failure=lambda run: f" {run.log.strip().splitlines()[-1]}",
        )
        self.stdout.write(f"Training run {run.pk}: model version {version.pk} {version.name} ({version.status})")
        for name, row in version.metrics["pipelines"].items():
            figures = ", ".join(
                f"{k} {row[k]:.3f}" for k in ("inscope_accuracy", "oos_recall", "macro_f1") if row.get(k) is not None
            )
            best = " (best)" if name == version.metrics["pipeline"] else ""
            self.stdout.write(
                f"  {name}{best}: {figures}; trained in {row.get('train_s')} s, p95 {row.get('p95_ms')} ms"
            )
        self.stdout.write(f"Model: {version.artifact_path}")
