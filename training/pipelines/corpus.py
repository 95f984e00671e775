"""The chat model's corpus: published content and consented conversations, cleaned, deduplicated and split.

Cleaning is `text_cleaning.text_clean` (markup, unicode, whitespace, boilerplate lines, e-mail addresses and
phone numbers masked; re-exported here with `pii_mask`). `corpus_build` cleans every document and dialogue,
drops lines repeated across many documents (site furniture the patterns missed), short texts and
near-duplicates (MinHash over word 3-shingles with datasketch's LSH, as at import), and splits the rest
train/validation by a hash of each text's id, so a text never changes side when others are added.
Plain Python: no Django imports.
"""

import functools
import hashlib
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from datasketch import MinHash, MinHashLSH

from .text_cleaning import BOILERPLATE_PATTERNS, clean_counted, pii_mask, text_clean

__all__ = [
    "BOILERPLATE_PATTERNS",
    "Corpus",
    "SourceDialogue",
    "SourceDocument",
    "corpus_build",
    "pii_mask",
    "text_clean",
]


@dataclass(frozen=True)
class SourceDocument:
    """A published catalog item as the corpus and the dialogue synthesis read it."""

    id: int
    title: str
    summary: str
    body: str
    section: str = ""
    tags: tuple[str, ...] = ()
    authors: tuple[str, ...] = ()
    date: str = ""  # ISO date of publication, "" when unknown
    kind: str = "article"
    url: str = ""


@dataclass(frozen=True)
class SourceDialogue:
    """A conversation a reader consented to share: (role, text) turns, role "user" or "assistant"."""

    id: str
    turns: tuple[tuple[str, str], ...]


@dataclass
class Corpus:
    """Pre-training texts by split, the kept documents and dialogues (cleaned), statistics and a hash."""

    train: list[str]
    validation: list[str]
    documents: list[SourceDocument] = field(default_factory=list)
    dialogues: list[SourceDialogue] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    dataset_hash: str = ""


NUM_PERM = 128
_SHINGLE_MIX = (np.uint64(0x9E3779B1), np.uint64(0x85EBCA77))
_LOW32 = np.uint64(0xFFFFFFFF)
# datasketch's default (0.5, 0.5) finds a pair at the threshold as a candidate with probability 0.4;
# candidates are confirmed on the full signature, so false positives cost only time: 0.95 at 0.8, 0.99 at 0.85.
LSH_WEIGHTS = (0.05, 0.95)
PROGRESS_EVERY = 200  # texts between progress reports


def corpus_build(
    documents: Iterable[SourceDocument],
    dialogues: Iterable[SourceDialogue] = (),
    *,
    validation_share: float = 0.1,
    near_dup_threshold: float = 0.8,
    seed: int = 0,
    min_words: int = 8,
    repeated_line_share: float = 0.2,
    progress: Callable[[float], None] | None = None,
) -> Corpus:
    """Clean, filter, deduplicate and split documents and consented dialogues into a pre-training corpus.

    Each document gives one text, "title\\n\\nsummary\\n\\nbody" cleaned (the summary left out when the body
    begins with it); each dialogue gives its turns' texts, one per line. Dropped: texts with nothing left
    ("empty") or under `min_words` words ("short"), and texts whose estimated Jaccard similarity of word
    3-shingles to a kept text (lower document id first, then dialogues by id) is at least
    `near_dup_threshold` ("near_duplicate"). Body and summary lines found in at least `repeated_line_share`
    of the documents (and at least 3) are dropped as boilerplate. A text goes to validation when the hash of
    its id and `seed` falls under `validation_share`, so its side never depends on the other texts; only
    when that leaves a side empty (two texts or more) does the text nearest the boundary move over.
    `progress(fraction)` is called as texts are processed; it may raise to stop. Raises ValueError for a
    `validation_share` outside [0, 1) and for repeated document or dialogue ids.
    """
    if not 0.0 <= validation_share < 1.0:
        raise ValueError("validation_share must be in [0, 1)")
    counts: Counter = Counter()
    docs = sorted(documents, key=lambda d: d.id)
    convs = sorted(dialogues, key=lambda d: d.id)
    for name, ids in (("document", [d.id for d in docs]), ("dialogue", [d.id for d in convs])):
        if len(set(ids)) != len(ids):  # the split and the hash key texts by id
            raise ValueError(f"{name} ids must be unique")
    cleaned_docs = [_document_clean(d, counts) for d in docs]
    repeated = _repeated_lines(cleaned_docs, repeated_line_share)
    candidates: list[tuple[str, str, SourceDocument | SourceDialogue]] = []
    for doc in cleaned_docs:
        doc = replace(
            doc, summary=_drop_lines(doc.summary, repeated, counts), body=_drop_lines(doc.body, repeated, counts)
        )
        candidates.append((f"document:{doc.id}", _document_text(doc), doc))
    for dialogue in convs:
        dialogue = _dialogue_clean(dialogue, counts)
        candidates.append((f"dialogue:{dialogue.id}", "\n".join(text for _, text in dialogue.turns), dialogue))

    lsh = MinHashLSH(threshold=near_dup_threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
    signatures: dict[str, MinHash] = {}
    dropped: Counter = Counter({"empty": 0, "short": 0, "near_duplicate": 0})
    kept: list[tuple[str, str, SourceDocument | SourceDialogue]] = []
    for done, (key, text, source) in enumerate(candidates, 1):
        reason = _drop_reason(key, text, min_words, near_dup_threshold, lsh, signatures)
        if reason:
            dropped[reason] += 1
        else:
            kept.append((key, text, source))
        if progress is not None and (done % PROGRESS_EVERY == 0 or done == len(candidates)):
            progress(done / len(candidates))

    validation_keys = _validation_keys([key for key, _, _ in kept], validation_share, seed)
    corpus = Corpus(
        train=[text for key, text, _ in kept if key not in validation_keys],
        validation=[text for key, text, _ in kept if key in validation_keys],
        documents=[s for _, _, s in kept if isinstance(s, SourceDocument)],
        dialogues=[s for _, _, s in kept if isinstance(s, SourceDialogue)],
    )
    corpus.dataset_hash = _dataset_hash(kept, validation_keys)
    texts = corpus.train + corpus.validation
    corpus.stats = {
        "documents_in": len(docs),
        "documents_out": len(corpus.documents),
        "dialogues_in": len(convs),
        "dialogues_out": len(corpus.dialogues),
        "dropped": dict(dropped),
        "boilerplate_lines_removed": counts["boilerplate_lines"],
        "repeated_lines_removed": counts["repeated_lines"],
        "pii_masked": {"email": counts["email"], "phone": counts["phone"]},
        "texts": len(texts),
        "characters": sum(len(t) for t in texts),
        "words": sum(len(t.split()) for t in texts),
        "train": len(corpus.train),
        "validation": len(corpus.validation),
    }
    return corpus


def _document_clean(doc: SourceDocument, counts: Counter) -> SourceDocument:
    return replace(
        doc,
        title=" ".join(clean_counted(doc.title, counts).split()),
        summary=clean_counted(doc.summary, counts),
        body=clean_counted(doc.body, counts),
        section=" ".join(doc.section.split()),
        tags=tuple(t for t in (" ".join(tag.split()) for tag in doc.tags) if t),
        authors=tuple(a for a in (" ".join(author.split()) for author in doc.authors) if a),
    )


def _dialogue_clean(dialogue: SourceDialogue, counts: Counter) -> SourceDialogue:
    turns = tuple((role, text) for role, text in ((r, clean_counted(t, counts)) for r, t in dialogue.turns) if text)
    return replace(dialogue, turns=turns)


def _repeated_lines(docs: Sequence[SourceDocument], share: float) -> frozenset[str]:
    seen: Counter = Counter()
    for doc in docs:
        seen.update(set(doc.summary.split("\n")) | set(doc.body.split("\n")))
    floor = max(3, share * len(docs))
    return frozenset(line for line, n in seen.items() if line and n >= floor)


def _drop_lines(text: str, repeated: frozenset[str], counts: Counter) -> str:
    lines = text.split("\n") if text else []
    kept = [line for line in lines if line not in repeated]
    counts["repeated_lines"] += len(lines) - len(kept)
    return "\n".join(kept)


def _document_text(doc: SourceDocument) -> str:
    summary = "" if doc.body.startswith(doc.summary) else doc.summary
    return "\n\n".join(part for part in (doc.title, summary, doc.body) if part)


def _drop_reason(
    key: str, text: str, min_words: int, threshold: float, lsh: MinHashLSH, signatures: dict[str, MinHash]
) -> str:
    words = text.casefold().split()
    if not words:
        return "empty"
    if len(words) < min_words:
        return "short"
    signature = _signature(words)
    if any(signature.jaccard(signatures[other]) >= threshold for other in lsh.query(signature)):
        return "near_duplicate"
    lsh.insert(key, signature, check_duplication=False)
    signatures[key] = signature
    return ""


def _signature(words: list[str]) -> MinHash:
    # As personalization/ingest/dedup.py: crc32 word hashes (stable across processes) mixed into 3-shingles.
    hashes = np.array([zlib.crc32(word.encode()) for word in words], dtype=np.uint64)
    if len(hashes) >= 3:
        hashes = (hashes[:-2] * _SHINGLE_MIX[0] + hashes[1:-1] * _SHINGLE_MIX[1] + hashes[2:]) & _LOW32
    minhash = _minhash_template().copy()
    minhash.update_batch(hashes.tolist())
    return minhash


@functools.cache
def _minhash_template() -> MinHash:
    # Drawing the permutations costs more than hashing a text; copies share them.
    return MinHash(num_perm=NUM_PERM, seed=1, hashfunc=int, scheme="affine32")


def _split_point(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _validation_keys(keys: list[str], share: float, seed: int) -> frozenset[str]:
    points = {key: _split_point(key, seed) for key in keys}
    validation = {key for key, point in points.items() if point < share}
    if len(keys) >= 2 and not validation:
        validation = {min(keys, key=points.__getitem__)}
    elif len(keys) >= 2 and len(validation) == len(keys):
        validation.discard(max(keys, key=points.__getitem__))
    return frozenset(validation)


def _dataset_hash(kept: Sequence[tuple[str, str, object]], validation_keys: frozenset[str]) -> str:
    entries = sorted(f"{'validation' if key in validation_keys else 'train'}\x1f{text}" for key, text, _ in kept)
    digest = hashlib.sha256()
    for entry in entries:
        digest.update(entry.encode())
        digest.update(b"\x1e")
    return digest.hexdigest()
