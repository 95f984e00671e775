"""Intent classifiers end to end on small data: train, calibrate, threshold, save, load, predict anything."""

import numpy as np
import pytest

from tests.intent_samples import OUT, TEMPLATES
from tests.intent_samples import examples as _examples
from training.pipelines import intent_encoders
from training.pipelines.intent_classifiers import MahalanobisScore
from training.pipelines.intent_data import OUT_OF_SCOPE, IntentRecord
from training.pipelines.intents import (
    IntentConfig,
    IntentModel,
    intent_pipelines_train,
    log_softmax,
    scope_choose,
    temperature_fit,
)


def _split(records):
    train, val = [], []
    for i, record in enumerate(records):
        (val if i % 5 == 0 else train).append(record)
    return train, val + [IntentRecord(text, OUT_OF_SCOPE) for text in OUT]


BAD_INPUTS = ["", "   ", "x" * 10_000, "🙂🙂🎉", "日本のニュースは?", "<b>latest</b> <script>alert(1)</script>",
              "nul\x00byte", "hola, what's new in football?"]  # fmt: skip


def test_tfidf_learns_thresholds_and_round_trips(tmp_path):
    train, val = _split(_examples())
    results = intent_pipelines_train(train, val, IntentConfig(pipelines=("tfidf",)))
    result = results["tfidf"]
    model = result.model
    assert model.labels == sorted(TEMPLATES)
    assert result.validation["inscope_accuracy"] >= 0.9
    assert 0.0 < model.temperature < 20.0 and 0.0 <= model.threshold < 1.0

    unseen = ["any news about the election today", "could you look up space for me", "thank you kindly", "hey hello"]
    labels = [p.label for p in model.predict(unseen)]
    assert labels == ["latest_news", "search_topic", "thanks", "greeting"]

    # Its scores are scikit-learn's log-probabilities, up to each row's constant (what softmax ignores).
    classifier = model.classifier
    texts = unseen + BAD_INPUTS
    expected = classifier.model.predict_log_proba(classifier.features.transform(texts))
    np.testing.assert_allclose(log_softmax(classifier.scores(texts)), expected, atol=1e-9)

    model.save(tmp_path / "m", IntentConfig(pipelines=("tfidf",)))
    loaded = IntentModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.probabilities(unseen), model.probabilities(unseen), rtol=1e-6)
    assert loaded.threshold == model.threshold

    for prediction in loaded.predict(BAD_INPUTS):
        assert prediction.label in (*TEMPLATES, OUT_OF_SCOPE) and 0.0 <= prediction.confidence <= 1.0


def test_out_of_scope_is_below_the_threshold():
    train, val = _split(_examples())
    model = intent_pipelines_train(train, val, IntentConfig(pipelines=("tfidf",)))["tfidf"].model
    inscope = model.predict([r.text for r in val if r.label != OUT_OF_SCOPE])
    out = model.predict(OUT)
    # The threshold was tuned on these: more out-of-scope queries are caught than in-scope ones lost.
    caught = sum(p.label == OUT_OF_SCOPE for p in out) / len(out)
    lost = sum(p.label == OUT_OF_SCOPE for p in inscope) / len(inscope)
    assert caught > 0.5 and lost < 0.2
    assert all(p.best in TEMPLATES and p.ranking[0][0] == p.best for p in out)


@pytest.fixture(scope="module")
def saved_minilm(tmp_path_factory):
    """all-MiniLM-L6-v2 saved to a folder of the test's own, as a user's fine-tuned encoder would be."""
    folder = tmp_path_factory.mktemp("minilm")
    encoder, tokenizer = intent_encoders.encoder_load(None)
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_finetuned_and_ensemble_from_a_local_encoder(saved_minilm, tmp_path):
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned", "ensemble"), encoder=str(saved_minilm), seed=1)
    config.fine_tune.epochs = 4
    config.fine_tune.min_steps = 0  # four passes are enough here; the default floor is for editors' sets
    seen = []
    results = intent_pipelines_train(train, val, config, progress=lambda p, f, line: seen.append((p, f)))
    finetuned, ensemble = results["finetuned"], results["ensemble"]
    assert finetuned.validation["inscope_accuracy"] >= 0.9
    assert finetuned.fit["final_loss"] < np.log(len(TEMPLATES))
    assert ensemble.validation["inscope_accuracy"] >= finetuned.validation["inscope_accuracy"] - 0.05
    assert ("finetuned", 1.0) in seen and any(p == "tfidf" for p, _ in seen)  # the ensemble trained its member

    ensemble.model.save(tmp_path / "e", config)
    loaded = IntentModel.load(tmp_path / "e")
    texts = ["latest news on jazz", "thanks!", ""]
    np.testing.assert_allclose(loaded.probabilities(texts), ensemble.model.probabilities(texts), atol=1e-5)
    assert [m["pipeline"] for m in loaded.meta["members"]] == ["finetuned", "tfidf"]


def test_fine_tuning_stops_when_asked(tiny_encoder):
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned",), encoder=str(tiny_encoder))
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(InterruptedError):
        intent_pipelines_train(train, val, config, should_stop=should_stop)
    assert len(calls) == 4


def test_temperature_fit_recovers_the_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=(4000, 5))
    probs = np.exp(log_softmax(logits / 2.5))
    targets = np.array([rng.choice(5, p=p) for p in probs])
    assert temperature_fit(logits, targets) == pytest.approx(2.5, rel=0.15)


def test_config_refuses_unknown_pipelines():
    with pytest.raises(ValueError, match="unknown pipelines"):
        IntentConfig(pipelines=("tfidf", "bert-large"))


def test_contrastive_fine_tuning_learns_the_intents(saved_minilm):
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned",), encoder=str(saved_minilm), seed=1)
    config.fine_tune = intent_encoders.FineTuneConfig(epochs=4, min_steps=0, objective="contrastive", per_class=4)
    finetuned = intent_pipelines_train(train, val, config)["finetuned"]
    assert finetuned.validation["inscope_accuracy"] >= 0.9
    assert finetuned.validation["oos_recall"] > 0


def test_supervised_contrastive_loss_rewards_intents_that_cluster():
    import torch

    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    scrambled = clustered[[0, 2, 1, 3]]
    loss = intent_encoders.supervised_contrastive_loss
    assert loss(clustered, labels, 0.1) < loss(scrambled, labels, 0.1)
    # Two orthogonal pairs: each anchor's positive is at similarity 1, the other two at 0.
    pairs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    expected = -np.log(np.exp(10) / (np.exp(10) + 2))
    assert float(loss(pairs, labels, 0.1)) == pytest.approx(expected, abs=1e-6)
    lonely = torch.randn(3, 2, requires_grad=True)
    no_pairs = loss(lonely, torch.tensor([0, 1, 2]), 0.1)
    no_pairs.backward()  # a batch without positives still backpropagates (nothing)
    assert float(no_pairs.detach()) == 0.0 and lonely.grad is not None


def test_class_grouped_order_puts_intents_side_by_side():
    import torch

    targets = [label for label in range(6) for _ in range(8)]
    order = intent_encoders.class_grouped_order(targets, 4, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(targets)))
    runs = [order[i : i + 4] for i in range(0, len(order), 4)]
    assert all(len({targets[i] for i in run}) == 1 for run in runs)
    assert [targets[run[0]] for run in runs] != sorted(targets[run[0]] for run in runs)  # intents mixed


def test_length_grouped_batches_pad_less_and_still_shuffle():
    import random

    import torch

    lengths = [random.Random(i).randint(2, 40) for i in range(2010)]  # 125 batches of 16 and one of 10
    batches = intent_encoders.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every example once
    assert sorted(len(b) for b in batches) == [10] + [16] * 125

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    assert padding(batches) < 0.2 * padding([shuffled[i : i + 16] for i in range(0, len(shuffled), 16)])
    firsts = [lengths[b[0]] for b in batches]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)  # batch order is shuffled
    assert intent_encoders.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(0)) == batches
    assert intent_encoders.length_grouped_batches(lengths, 16, torch.Generator().manual_seed(1)) != batches


def test_length_grouped_fine_tuning_learns_the_intents(saved_minilm):
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned",), encoder=str(saved_minilm))
    config.fine_tune.length_grouped = True
    config.fine_tune.min_steps = 60
    result = intent_pipelines_train(train, val, config)["finetuned"]
    inscope = [r for r in val if r.label != OUT_OF_SCOPE]
    predictions = result.model.predict([r.text for r in inscope])
    assert sum(p.best == r.label for p, r in zip(predictions, inscope, strict=True)) / len(inscope) >= 0.8


def test_fine_tune_config_refuses_unknown_objectives():
    with pytest.raises(ValueError, match="objective"):
        intent_encoders.FineTuneConfig(objective="triplet")


def test_encoders_infer_in_the_recorded_dtype(tiny_encoder, tmp_path):
    import json

    import torch

    native = "bfloat16" if intent_encoders.native_bf16() else "float32"
    assert IntentConfig(runtime="torch").inference_dtype == native
    assert IntentConfig(runtime="onnx").inference_dtype == "float32"  # onnxruntime runs the float32 graph
    with pytest.raises(ValueError, match="inference dtype"):
        IntentConfig(inference_dtype="float8")
    train, val = _split(_examples())
    config = IntentConfig(
        pipelines=("finetuned",), encoder=str(tiny_encoder), runtime="torch", inference_dtype="float32"
    )
    config.fine_tune.min_steps = 20
    model = intent_pipelines_train(train, val, config)["finetuned"].model
    model.save(tmp_path / "m", config)
    texts = [r.text for r in val]
    exact = model.probabilities(texts)

    meta_file = tmp_path / "m" / "intent.json"
    meta = json.loads(meta_file.read_text())
    meta["config"]["inference_dtype"] = "bfloat16"
    meta_file.write_text(json.dumps(meta))
    halved = IntentModel.load(tmp_path / "m")
    expected = torch.bfloat16 if intent_encoders.native_bf16() else torch.float32
    assert next(halved.classifier.module.parameters()).dtype == expected
    np.testing.assert_allclose(halved.probabilities(texts), exact, atol=0.05)

    del meta["config"]["inference_dtype"]  # saved before the dtype was recorded: calibrated in float32
    del meta["config"]["runtime"]  # and before the runtime was: torch
    meta_file.write_text(json.dumps(meta))
    legacy = IntentModel.load(tmp_path / "m")
    assert next(legacy.classifier.module.parameters()).dtype == torch.float32
    np.testing.assert_allclose(legacy.probabilities(texts), exact, atol=1e-5)


def test_the_fine_tuned_encoder_deploys_on_onnxruntime_with_torchs_scores(tiny_encoder, tmp_path, caplog):
    import json
    import logging

    assert IntentConfig().runtime == "onnx"  # onnxruntime and onnxscript are dependencies
    with pytest.raises(ValueError, match="encoder runtime"):
        IntentConfig(runtime="tensorrt")
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned",), encoder=str(tiny_encoder), runtime="onnx")
    config.fine_tune.min_steps = 20
    trained = intent_pipelines_train(train, val, config)["finetuned"].model
    assert isinstance(trained.classifier.runner, intent_encoders.OnnxModule)  # validation scored the export
    trained.save(tmp_path / "m", config)
    assert (tmp_path / "m" / "finetuned" / intent_encoders.ONNX_FILE).stat().st_size > 0

    texts = [r.text for r in val] + BAD_INPUTS  # a batch of every length, and one text at a time below
    module = trained.classifier.module
    eager = intent_encoders.encode(module, trained.classifier.tokenizer, texts, max_length=48)
    np.testing.assert_allclose(trained.classifier.scores(texts), eager, atol=1e-4)

    loaded = IntentModel.load(tmp_path / "m")
    assert isinstance(loaded.classifier.runner, intent_encoders.OnnxModule)
    expected = trained.probabilities(texts)
    np.testing.assert_allclose(loaded.probabilities(texts), expected, atol=1e-5)
    one_by_one = np.concatenate([loaded.probabilities([text]) for text in texts])
    np.testing.assert_allclose(one_by_one, expected, atol=1e-5)
    assert [p.label for p in loaded.predict(texts)] == [p.label for p in trained.predict(texts)]

    # Without its export (a folder copied without it), the same model runs on torch, in float32, and says so.
    (tmp_path / "m" / "finetuned" / intent_encoders.ONNX_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        fallback = IntentModel.load(tmp_path / "m")
    assert fallback.classifier.runner is fallback.classifier.module
    assert "runs on torch" in caplog.text
    np.testing.assert_allclose(fallback.probabilities(texts), expected, atol=1e-4)

    meta = json.loads((tmp_path / "m" / "intent.json").read_text())
    assert meta["config"]["runtime"] == "onnx" and meta["config"]["inference_dtype"] == "float32"


def test_frozen_embeddings_deploy_on_onnxruntime_too(tiny_encoder, tmp_path):
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("embedding",), encoder=str(tiny_encoder), runtime="onnx")
    trained = intent_pipelines_train(train, val, config)["embedding"].model
    classifier = trained.classifier
    assert isinstance(classifier.runner, intent_encoders.OnnxModule)
    texts = [r.text for r in val] + BAD_INPUTS
    onnx = intent_encoders.encode(classifier.runner, classifier.tokenizer, texts, max_length=48)
    eager = intent_encoders.encode(classifier.module, classifier.tokenizer, texts, max_length=48)
    np.testing.assert_allclose(onnx, eager, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(onnx, axis=1), 1.0, atol=1e-5)  # unit length, as trained on

    trained.save(tmp_path / "m", config)
    loaded = IntentModel.load(tmp_path / "m")
    assert isinstance(loaded.classifier.runner, intent_encoders.OnnxModule)
    np.testing.assert_allclose(loaded.probabilities(texts), trained.probabilities(texts), atol=1e-5)


def test_int8_weights_deploy_smaller_with_nearly_the_same_scores(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="int8 weights need the onnx runtime"):
        IntentConfig(runtime="torch", int8=True)
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned",), encoder=str(tiny_encoder), runtime="onnx", int8=True)
    config.fine_tune.min_steps = 20
    trained = intent_pipelines_train(train, val, config)["finetuned"].model
    classifier = trained.classifier
    trained.save(tmp_path / "m", config)
    int8_file = tmp_path / "m" / "finetuned" / intent_encoders.ONNX_FILE
    float32 = intent_encoders.onnx_export(classifier.module, classifier.tokenizer, 48)
    assert int8_file.stat().st_size < 0.6 * len(float32)  # its matrices hold a byte a weight, not four

    texts = [r.text for r in val] + BAD_INPUTS
    eager = intent_encoders.encode(classifier.module, classifier.tokenizer, texts, max_length=48)
    quantised = classifier.scores(texts)
    assert not np.allclose(quantised, eager, atol=1e-6)  # int8 arithmetic, not the float32 graph
    np.testing.assert_allclose(quantised, eager, atol=0.05 * np.abs(eager).max())
    assert (quantised.argmax(1) == eager.argmax(1)).mean() >= 0.9

    loaded = IntentModel.load(tmp_path / "m")
    assert loaded.classifier.runner.source == int8_file
    np.testing.assert_allclose(loaded.probabilities(texts), trained.probabilities(texts), atol=1e-6)
    assert [p.label for p in loaded.predict(texts)] == [p.label for p in trained.predict(texts)]


def test_mahalanobis_score_is_minus_the_distance_to_the_nearest_intent(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, size=(3, 6))
    targets = np.repeat(np.arange(3), 200)
    embeddings = centres[targets] + rng.normal(0, 1, size=(600, 6)) * np.array([3, 1, 1, 1, 1, 0.2])
    score = MahalanobisScore.fit(embeddings, targets, 3)
    np.testing.assert_allclose(score.means, [embeddings[targets == c].mean(0) for c in range(3)])

    queries = np.vstack([centres + 0.1, rng.normal(0, 5, size=(4, 6)), centres[:1] + 40])
    by_hand = [-min((q - m) @ score.precision @ (q - m) for m in score.means) for q in queries]
    np.testing.assert_allclose(score(queries), by_hand, rtol=1e-9, atol=1e-9)
    assert score(queries[:3]).min() > score(queries[-1:])[0]  # far from every intent: lowest
    # Distance is measured in the intents' own spread: along the wide first axis a step counts for less.
    step = np.eye(6)[[0, 5]] * 3.0
    wide, narrow = centres[:1] + step[:1], centres[:1] + step[1:]
    assert score(wide)[0] > score(narrow)[0]

    assert score(np.zeros((0, 0))).shape == (0,)  # no text, as a batch of none comes out of the encoder
    score.save(tmp_path / MahalanobisScore.FILE)
    loaded = MahalanobisScore.load(tmp_path / MahalanobisScore.FILE)
    np.testing.assert_allclose(loaded(queries), score(queries))


def test_scope_choose_keeps_the_score_validation_prefers():
    truth = ["a", "a", "b", "b", OUT_OF_SCOPE, OUT_OF_SCOPE]
    predicted = ["a", "a", "b", "b", "a", "b"]
    confidence = np.array([0.9, 0.5, 0.9, 0.6, 0.7, 0.8])  # the out-of-scope ones are as sure as the rest
    mahalanobis = np.array([-1.0, -2.0, -1.5, -1.2, -9.0, -7.0])  # ...but far from every intent
    candidates = {"confidence": confidence, "mahalanobis": mahalanobis}
    scope, choice, tried = scope_choose(truth, predicted, candidates, IntentConfig())
    assert scope == "mahalanobis" and -7.0 < choice.threshold < -2.0 and choice.accuracy == 1.0
    # The confidence at best keeps all four in scope or catches both out of scope with two lost: 4 of 6.
    assert tried == {"confidence": pytest.approx(4 / 6), "mahalanobis": 1.0}

    forced, choice, tried = scope_choose(truth, predicted, candidates, IntentConfig(oos_score="confidence"))
    assert forced == "confidence" and list(tried) == ["confidence"]
    # A tie keeps the confidence; so does a pipeline without the other score, whatever is asked.
    assert (
        scope_choose(truth, predicted, {"confidence": confidence, "mahalanobis": confidence - 5}, IntentConfig())[0]
        == "confidence"
    )
    tfidf = {"confidence": confidence, "mahalanobis": None}
    assert scope_choose(truth, predicted, tfidf, IntentConfig(oos_score="mahalanobis"))[0] == "confidence"
    # Without an out-of-scope example in validation nothing tells the scores apart: the confidence stays.
    inscope = slice(0, 4)
    only_in = {name: values[inscope] for name, values in candidates.items()}
    assert scope_choose(truth[inscope], predicted[inscope], only_in, IntentConfig())[0] == "confidence"
    with pytest.raises(ValueError, match="oos_score must be one of"):
        IntentConfig(oos_score="energy")


def test_a_fine_tuned_encoder_sends_queries_far_from_every_intent_out_of_scope(saved_minilm, tmp_path):
    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned", "ensemble"), encoder=str(saved_minilm), oos_score="mahalanobis")
    config.fine_tune.epochs = 4
    config.fine_tune.min_steps = 0
    lines = []
    results = intent_pipelines_train(train, val, config, progress=lambda p, f, line: lines.append(line))
    assert any("embedding" in line and "training examples" in line for line in lines)
    for name in ("finetuned", "ensemble"):
        result = results[name]
        model = result.model
        assert model.scope == "mahalanobis" and result.threshold["score"] == "mahalanobis"
        assert result.threshold["threshold"] < 0  # minus a squared distance
        inscope = model.predict([r.text for r in val if r.label != OUT_OF_SCOPE])
        out = model.predict(OUT)
        caught = sum(p.label == OUT_OF_SCOPE for p in out) / len(out)
        lost = sum(p.label == OUT_OF_SCOPE for p in inscope) / len(inscope)
        assert caught > 0.5 and lost < 0.2
        # The threshold is on the score, whatever the confidence: a query below it is out of scope.
        _, scores = model.classifier.scores_and_scope(OUT)
        assert [p.label == OUT_OF_SCOPE for p in out] == list(scores < model.threshold)

    ensemble = results["ensemble"].model
    finetuned = ensemble.classifier.members[0][0]
    assert finetuned.runner.output_names == intent_encoders.LOGITS_AND_EMBEDDING  # one pass gives both
    np.testing.assert_allclose(ensemble.classifier.scores_and_scope(OUT)[1], finetuned.scores_and_scope(OUT)[1])

    ensemble.save(tmp_path / "e", config)
    assert (tmp_path / "e" / "finetuned" / MahalanobisScore.FILE).exists()
    loaded = IntentModel.load(tmp_path / "e")
    texts = OUT + [r.text for r in val] + BAD_INPUTS
    assert loaded.scope == "mahalanobis" and loaded.meta["scope"] == "mahalanobis"
    assert [p.label for p in loaded.predict(texts)] == [p.label for p in ensemble.predict(texts)]
    np.testing.assert_allclose(
        loaded.classifier.scores_and_scope(texts)[1], ensemble.classifier.scores_and_scope(texts)[1], rtol=1e-5
    )


def test_a_model_saved_before_the_sentence_embedding_was_exported_still_loads(tiny_encoder, tmp_path):
    import json

    train, val = _split(_examples())
    config = IntentConfig(pipelines=("finetuned",), encoder=str(tiny_encoder), runtime="onnx", oos_score="mahalanobis")
    config.fine_tune.min_steps = 20
    trained = intent_pipelines_train(train, val, config)["finetuned"].model
    with pytest.raises(ValueError, match="no Mahalanobis score"):
        IntentModel(intent_pipelines_train(train, val, IntentConfig(pipelines=("tfidf",)))["tfidf"].model.classifier,
                    1.0, -5.0, scope="mahalanobis")  # fmt: skip
    trained.save(tmp_path / "m", config)
    folder = tmp_path / "m"
    # What an earlier version wrote: an export with the logits alone, no statistics, no "scope" in intent.json.
    classifier = trained.classifier
    old_export = intent_encoders.onnx_export(classifier.module, classifier.tokenizer, 48)
    (folder / "finetuned" / intent_encoders.ONNX_FILE).write_bytes(old_export)
    (folder / "finetuned" / MahalanobisScore.FILE).unlink()
    meta = json.loads((folder / "intent.json").read_text())
    del meta["scope"]
    meta["threshold"] = 0.3
    (folder / "intent.json").write_text(json.dumps(meta))

    old = IntentModel.load(folder)
    assert old.scope == "confidence" and not old.classifier.has_scope
    assert old.classifier.runner.output_names == ("output",)
    texts = [r.text for r in val] + BAD_INPUTS
    np.testing.assert_allclose(old.probabilities(texts), trained.probabilities(texts), atol=1e-5)
    assert [p.label == OUT_OF_SCOPE for p in old.predict(texts)] == [p.confidence < 0.3 for p in old.predict(texts)]
    # A Mahalanobis model whose statistics went missing is refused at load, not answered wrongly.
    meta["scope"] = "mahalanobis"
    (folder / "intent.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no Mahalanobis score"):
        IntentModel.load(folder)
