"""Deduplication at import: which existing item does an incoming record repeat?

Three tests, in order: the same canonical URL, the same content hash (the same clean title and
body), or nearly the same text: MinHash signatures over word 3-shingles of the title and body,
searched with datasketch's MinHashLSH and confirmed by the signatures' estimated Jaccard similarity
(≥ 0.8 by default). Signatures are computed once, when an item is written (`fingerprints_store`),
and kept in `ContentFingerprint`; the index is loaded from them lazily, the first time a record
needs a near-duplicate search.

Texts under MIN_WORDS words (social posts, briefs) are matched exactly only: in a short text one
changed number is news, not a correction.
"""

import functools
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH
from django.conf import settings
from django.db import transaction

from ..models import Content, ContentFingerprint
from .records import ContentRecord

NUM_PERM = 128
SEED = 1
SCHEME = "affine32"
# LSH bands and rows over the first 50 MinHash values: a pair at Jaccard 0.8 becomes a candidate with
# probability 0.98, at 0.5 with 0.27 (candidates are then checked on all 128 values).
LSH_PARAMS = (10, 5)
THRESHOLD = 0.8
MIN_WORDS = 50
# Longer texts are fingerprinted on their first MAX_WORDS words, which bounds the cost per record.
MAX_WORDS = 2000
DEFAULT_WINDOW = 20_000
# Values per IN (...) query: SQLite allows at most 999 parameters on old builds.
LOOKUP_CHUNK = 500
_SHINGLE_MIX = (np.uint64(0x9E3779B1), np.uint64(0x85EBCA77))
_LOW32 = np.uint64(0xFFFFFFFF)

Reason = Literal["url", "hash", "near"]


@dataclass(frozen=True)
class Match:
    """What a record duplicates: an existing item (content_id), or an earlier record of the same
    batch (batch_index) that has no id yet."""

    reason: Reason
    content_id: int | None = None
    batch_index: int | None = None
    similarity: float = 1.0


class DuplicateFinder:
    """Finds the existing item an incoming record duplicates, for one import job.

    Exact matches (canonical URL, content hash) come from indexed queries, two per LOOKUP_CHUNK
    records in `find_many`; near matches from an in-memory MinHashLSH over the fingerprints of the
    `window` most recent items plus those this finder was told about with `add`, oldest evicted first.

    Cost: loading the index reads `window` fingerprints once, O(window) time (about 50 ms per 1,000
    items); each search is O(bands + candidates), independent of the catalog's size (about 0.015 ms,
    plus 0.1 ms to compute the signature of a 175-word text). Memory: about 3 KB per indexed item
    (the LSH buckets and a 512-byte signature), so O(window): about 65 MB at the default 20,000
    (settings.MEDIACHAT["INGEST_NEAR_DUP_WINDOW"]). Create one finder per job (or per run of the
    feed poller) and reuse it: the index is loaded once. Exact-match memory of `add` is
    capped at `window` entries too.
    """

    def __init__(self, *, threshold: float = THRESHOLD, window: int | None = None) -> None:
        if window is None:
            window = settings.MEDIACHAT.get("INGEST_NEAR_DUP_WINDOW", DEFAULT_WINDOW)
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.window = max(int(window), 1)
        self._lsh: MinHashLSH | None = None
        self._signatures: dict[int, bytes] = {}
        self._order: deque[int] = deque()
        self._urls: OrderedDict[str, int] = OrderedDict()
        self._hashes: OrderedDict[str, int] = OrderedDict()

    # --- Searching ------------------------------------------------------------------------------

    def find(self, record: ContentRecord) -> int | None:
        """The id of the existing item the record duplicates, or None."""
        return self.find_many([record])[0]

    def find_many(self, records: list[ContentRecord]) -> list[int | None]:
        """`find` for each record, with batched queries. A record that repeats an earlier record of
        the same list gets None here (that record has no id yet): `match_many` says which one."""
        matches = self.match_many(records, within_batch=False)
        return [match.content_id if match else None for match in matches]

    def match(self, record: ContentRecord) -> Match | None:
        return self.match_many([record])[0]

    def match_many(self, records: list[ContentRecord], *, within_batch: bool = True) -> list[Match | None]:
        """For each record, what it duplicates, or None: an existing item (by canonical URL, then
        content hash, then near-duplicate text), else an earlier record of the same list (near
        duplicates among the records themselves only when within_batch, which costs about 0.04 ms
        a record)."""
        matches: list[Match | None] = [None] * len(records)
        by_url = self._lookup("canonical_url", {r.canonical_url for r in records if r.canonical_url}, self._urls)
        by_hash = self._lookup("content_hash", {r.content_hash for r in records if r.content_hash}, self._hashes)
        first_url: dict[str, int] = {}
        first_hash: dict[str, int] = {}
        for i, record in enumerate(records):
            url, digest = record.canonical_url, record.content_hash
            if url and url in by_url:
                matches[i] = Match("url", content_id=by_url[url])
            elif digest and digest in by_hash:
                matches[i] = Match("hash", content_id=by_hash[digest])
            elif url and url in first_url:
                matches[i] = Match("url", batch_index=first_url[url])
            elif digest and digest in first_hash:
                matches[i] = Match("hash", batch_index=first_hash[digest])
            if url:
                first_url.setdefault(url, i)
            if digest:
                first_hash.setdefault(digest, i)
        self._match_near(records, matches, within_batch)
        return matches

    def _match_near(self, records: list[ContentRecord], matches: list[Match | None], within_batch: bool) -> None:
        todo = [
            (i, sig) for i, r in enumerate(records) if matches[i] is None and (sig := record_signature(r)) is not None
        ]
        if not todo:
            return
        lsh = self._index()
        # Records of this batch, for near duplicates among themselves.
        batch = MinHashLSH(num_perm=NUM_PERM, params=LSH_PARAMS) if within_batch and len(todo) > 1 else None
        batch_signatures: dict[int, np.ndarray] = {}
        found: dict[int, Match] = {}
        for i, sig in todo:
            lean = _lean(sig)
            best = self._best(sig, lsh.query(lean), lambda cid: np.frombuffer(self._signatures[cid], dtype="<u4"))
            if best:
                found[i] = Match("near", content_id=best[0], similarity=best[1])
            elif batch is not None:
                best = self._best(sig, batch.query(lean), batch_signatures.__getitem__)
                if best:
                    matches[i] = Match("near", batch_index=best[0], similarity=best[1])
            if batch is not None:
                batch.insert(i, lean, check_duplication=False)
                batch_signatures[i] = sig
        if found:
            # An item deleted since the index was loaded is no match.
            ids = {m.content_id for m in found.values()}
            alive = set(Content.objects.filter(id__in=ids).values_list("id", flat=True))
            for cid in ids - alive:
                self._forget(cid)
            for i, match in found.items():
                if match.content_id in alive:
                    matches[i] = match

    def _best(self, sig: np.ndarray, candidates: Iterable, signature_of) -> tuple[int, float] | None:
        best: tuple[int, float] | None = None
        for key in candidates:
            similarity = float(np.count_nonzero(signature_of(key) == sig)) / NUM_PERM
            if similarity >= self.threshold and (best is None or similarity > best[1]):
                best = (key, similarity)
        return best

    def _lookup(self, field: str, values: set[str], known: OrderedDict[str, int]) -> dict[str, int]:
        """value → id of the oldest item holding it: from this finder's adds, then the database."""
        found = {value: known[value] for value in values if value in known}
        rest = sorted(values - found.keys())
        for start in range(0, len(rest), LOOKUP_CHUNK):
            chunk = rest[start : start + LOOKUP_CHUNK]
            rows = Content.objects.filter(**{f"{field}__in": chunk}).order_by("-id").values_list(field, "id")
            found.update(rows)  # descending ids: the oldest item is written last and wins
        return found

    # --- Registering ----------------------------------------------------------------------------

    def add(self, content_id: int, record: ContentRecord) -> None:
        """Register an item just written from the record, so that later records match it."""
        if record.canonical_url:
            self._remember(self._urls, record.canonical_url, content_id)
        if record.content_hash:
            self._remember(self._hashes, record.content_hash, content_id)
        sig = record_signature(record)
        if sig is None:
            if content_id in self._signatures:  # a correction made it too short to fingerprint
                self._forget(content_id)
            return
        self._index()
        self._insert(content_id, sig.tobytes())

    def _remember(self, known: OrderedDict[str, int], value: str, content_id: int) -> None:
        known.setdefault(value, content_id)
        if len(known) > self.window:
            known.popitem(last=False)

    def _index(self) -> MinHashLSH:
        if self._lsh is None:
            self._lsh = MinHashLSH(num_perm=NUM_PERM, params=LSH_PARAMS)
            rows = (
                ContentFingerprint.objects.filter(num_perm=NUM_PERM)
                .order_by("-content_id")
                .values_list("content_id", "signature")[: self.window]
            )
            loaded = []
            for content_id, signature in rows.iterator(chunk_size=2000):
                loaded.append(content_id)
                self._insert(content_id, bytes(signature), evict=False)
            self._order.extend(reversed(loaded))  # oldest first
        return self._lsh

    def _insert(self, content_id: int, signature: bytes, *, evict: bool = True) -> None:
        if content_id in self._signatures:
            self._lsh.remove(content_id)
            self._order.remove(content_id)
        self._lsh.insert(content_id, _lean(np.frombuffer(signature, dtype="<u4")), check_duplication=False)
        self._signatures[content_id] = signature
        if evict:
            self._order.append(content_id)
            while len(self._order) > self.window:
                oldest = self._order.popleft()
                self._lsh.remove(oldest)
                del self._signatures[oldest]

    def _forget(self, content_id: int) -> None:
        if content_id in self._signatures:
            self._lsh.remove(content_id)
            self._order.remove(content_id)
            del self._signatures[content_id]


# --- Fingerprints ---------------------------------------------------------------------------------


def record_signature(record: ContentRecord) -> np.ndarray | None:
    """The MinHash values (uint32) of the record's clean title and body, None for a short text."""
    return text_signature(record.title, record.body or record.summary)


@functools.lru_cache(maxsize=2048)
def text_signature(title: str, body: str) -> np.ndarray | None:
    """MinHash over the word 3-shingles of the title and body (lower case, first MAX_WORDS words),
    or None under MIN_WORDS words. Cached: the finder and the writer ask for the same texts."""
    words = f"{title}\n{body}".casefold().split()[:MAX_WORDS]
    if len(words) < MIN_WORDS:
        return None
    # crc32: stable across processes and Python versions (the signatures are stored); each shingle
    # hash mixes three word hashes in order.
    hashes = np.array([zlib.crc32(word.encode()) for word in words], dtype=np.uint64)
    shingles = (hashes[:-2] * _SHINGLE_MIX[0] + hashes[1:-1] * _SHINGLE_MIX[1] + hashes[2:]) & _LOW32
    minhash = _minhash_template().copy()
    minhash.update_batch(shingles.tolist())
    signature = minhash.hashvalues.astype("<u4")
    signature.setflags(write=False)
    return signature


@functools.cache
def _minhash_template() -> MinHash:
    # The permutations are drawn once; copies share them. Inputs are already 32-bit hashes.
    return MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=int, scheme=SCHEME)


def _lean(signature: np.ndarray) -> LeanMinHash:
    return LeanMinHash(seed=SEED, hashvalues=signature, scheme=SCHEME)


def fingerprint_store(*, content_id: int, record: ContentRecord) -> None:
    """Store the fingerprint of one item written from the record."""
    fingerprints_store(items=[(content_id, record)])


def fingerprints_store(*, items: list[tuple[int, ContentRecord]]) -> int:
    """Store (or replace) the fingerprints of items just written from these records, in one query;
    an item whose text is now too short loses its fingerprint. Returns how many were stored."""
    rows = []
    short = []
    for content_id, record in items:
        sig = record_signature(record)
        if sig is None:
            short.append(content_id)
        else:
            rows.append(ContentFingerprint(content_id=content_id, num_perm=NUM_PERM, signature=sig.tobytes()))
    with transaction.atomic():
        if rows:
            ContentFingerprint.objects.bulk_create(
                rows, update_conflicts=True, unique_fields=["content"], update_fields=["num_perm", "signature"]
            )
        if short:
            ContentFingerprint.objects.filter(content_id__in=short).delete()
    return len(rows)


def fingerprints_backfill(*, batch_size: int = 500) -> int:
    """Fingerprint the items that have none (written before fingerprints existed, or by hand), from
    their stored title and body. Returns how many were stored."""
    stored = 0
    last_id = 0
    while True:
        batch = list(
            Content.objects.filter(id__gt=last_id, fingerprint__isnull=True)
            .order_by("id")
            .values_list("id", "title", "body", "summary")[:batch_size]
        )
        if not batch:
            return stored
        last_id = batch[-1][0]
        items = [(cid, ContentRecord(external_id="", title=t, body=b, summary=s)) for cid, t, b, s in batch]
        stored += fingerprints_store(items=items)
