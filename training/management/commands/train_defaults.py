from django.core.management.base import BaseCommand, CommandError

from training.models import ModelKind
from training.services.runs import TrainingRunError, default_models_train


class Command(BaseCommand):
    help = "Train and activate a model of each kind that has none active yet (make demo runs it)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--chat-preset", choices=["tiny", "small", "base"], default="small", help="The chat model's size."
        )
        parser.add_argument(
            "--intent-pipelines",
            default="tfidf,finetuned,ensemble",
            help="The intent pipelines compared (comma-separated: tfidf, embedding, finetuned, ensemble).",
        )

    def handle(self, *args, **options):
        parameters = {
            ModelKind.CHAT_LM: {"preset": options["chat_preset"]},
            ModelKind.INTENT: {"pipelines": [p.strip() for p in options["intent_pipelines"].split(",") if p.strip()]},
        }
        try:
            trained = default_models_train(parameters=parameters)
        except TrainingRunError as exc:
            raise CommandError(str(exc)) from None
        for kind, version in trained:
            if version is None:
                self.stdout.write(f"{kind}: an active model exists already; nothing to train")
            else:
                metrics = ", ".join(
                    f"{k}={v}" for k, v in sorted(version.metrics.items()) if isinstance(v, int | float | str)
                )
                self.stdout.write(f"{kind}: trained and activated {version.name} ({metrics})")
