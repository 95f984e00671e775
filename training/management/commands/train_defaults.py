from django.core.management.base import BaseCommand, CommandError

from training.services.runs import TrainingRunError, default_models_train


class Command(BaseCommand):
    help = "Train and activate a model of each kind that has none yet (make demo runs it)."

    def handle(self, *args, **options):
        try:
            trained = default_models_train()
        except TrainingRunError as exc:
            raise CommandError(str(exc)) from None
        for kind, version in trained:
            if version is None:
                self.stdout.write(f"{kind}: a model exists already; nothing to train")
            else:
                metrics = ", ".join(f"{k}={v}" for k, v in sorted(version.metrics.items()) if not isinstance(v, dict))
                self.stdout.write(f"{kind}: trained and activated {version.name} ({metrics})")
