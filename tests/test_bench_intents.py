"""bench/intents.py's --fine-tune settings: each KEY=VALUE read as its field's type."""

import argparse

import pytest

from bench.intents import fine_tune_config
from training.pipelines.intent_encoders import FineTuneConfig


def test_fine_tune_settings_are_read_as_their_types():
    parser = argparse.ArgumentParser()
    config = fine_tune_config(FineTuneConfig(), ["length_grouped=True", "epochs=1.5", "batch_size=16"], parser)
    assert (config.length_grouped, config.epochs, config.batch_size) == (True, 1.5, 16)
    assert fine_tune_config(config, ["length_grouped=false"], parser).length_grouped is False


@pytest.mark.parametrize("setting", ["length_grouped=maybe", "epochs=many", "colour=blue", "objective=triplet"])
def test_bad_fine_tune_settings_stop_the_bench_with_a_message(setting, capsys):
    with pytest.raises(SystemExit):
        fine_tune_config(FineTuneConfig(), [setting], argparse.ArgumentParser())
    assert "--fine-tune" in capsys.readouterr().err
