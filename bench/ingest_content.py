"""Ingest benchmark: JSON Lines items into the database through the real import path.

Runs on DATABASE_URL when it is set (PostgreSQL for the goal), else on a SQLite file of its own under
MEDIACHAT_DATA_DIR; it migrates that database and removes the items of its earlier runs first. Phases,
one function each, each adding its numbers to one results dict:

- generate: BENCH_ITEMS realistic items (HTML bodies of three to five paragraphs, tags, authors, dates,
  from the synthetic catalog's vocabulary) written to a temporary JSON Lines file, in a child process so
  that the numbers below are the importer's;
- import: `import_job_create` + `import_job_run` in this process (cleaning, deduplication, mapping
  rules, batched writes), timed: items per second;
- embed: the imported items' embeddings through the platform path, `contents_embed` on each import
  batch's ids as the worker runs the tasks the import enqueued (read, encode, bulk upsert), and the bare
  sentence-transformers `model.encode` of the same texts with the same batch size and torch threads,
  batch by batch in turn so that both see the same machine: `embed_overhead` = raw rate / platform rate.

The last line printed is the results as JSON, at least {"items", "import_items_per_s", "embed_items_per_s",
"raw_encode_items_per_s", "embed_overhead", "peak_rss_mb"}. Goals: at least 1,000 items/s imported into
PostgreSQL without embeddings, embedding overhead at most 1.2. BENCH_PROFILE=1 profiles the import phase
and prints its top functions to stderr. The tasks the import enqueues go to an in-memory broker: this
process embeds the items itself, and no worker elsewhere should get them.

Environment: BENCH_ITEMS (10000), BENCH_SEED (7), BENCH_PROFILE (0), BENCH_PROFILE_SORT (cumulative; or
tottime), BENCH_EMBED (1; 0 skips the embed phase), MEDIACHAT_EMBEDDER_THREADS (0: torch's own count).
The profile covers the writing thread only, not the reader thread that cleans ahead of it.
"""

import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ITEMS = int(os.environ.get("BENCH_ITEMS", "10000"))
SEED = int(os.environ.get("BENCH_SEED", "7"))
PROFILE = os.environ.get("BENCH_PROFILE", "0") == "1"
EMBED = os.environ.get("BENCH_EMBED", "1") == "1"
SOURCE = "bench-ingest"


def log(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def setup() -> None:
    """Django on this run's database, migrated, without the items of earlier runs."""
    if not os.environ.get("DATABASE_URL"):
        data_dir = Path(os.environ.get("MEDIACHAT_DATA_DIR", ROOT / "var"))
        data_dir.mkdir(parents=True, exist_ok=True)
        os.environ["DATABASE_URL"] = f"sqlite:///{data_dir / 'bench-ingest.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mediachat.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    from mediachat.celery import app

    app.conf.broker_url = "memory://localhost/"  # the embedding tasks the import enqueues stay in this process

    from personalization.models import Content

    call_command("migrate", "--noinput", verbosity=0)
    deleted, _ = Content.objects.filter(source=SOURCE).delete()
    if deleted:
        log(f"removed {deleted:,} rows of an earlier run")


def _write_items(path: str, items: int, seed: int) -> None:
    from personalization.demo.synthetic import SyntheticConfig, plan_catalog

    config = SyntheticConfig(items=items, readers=1, interactions=0, seed=seed, end=datetime(2025, 6, 1, tzinfo=UTC))
    authors, planned, _ = plan_catalog(config)
    with open(path, "w", encoding="utf-8") as out:
        for item in planned:
            body = "".join(f"<p>{paragraph}</p>\n" for paragraph in item.body.split("\n\n"))
            row = {
                "id": item.slug,
                "title": item.title,
                "summary": item.summary,
                "body": body,
                "url": f"https://bench.example/{item.section}/{item.slug}?utm_source=bench",
                "published_at": item.published_at.isoformat(),
                "section": item.section,
                "tags": list(item.tags),
                "authors": [authors[a].name for a in item.authors],
                "kind": item.kind,
                "duration_seconds": item.duration_seconds,
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def phase_generate(results: dict, path: Path) -> None:
    started = time.monotonic()
    child = multiprocessing.get_context("fork").Process(target=_write_items, args=(str(path), ITEMS, SEED))
    child.start()
    child.join()
    if child.exitcode:
        raise SystemExit(f"generating the items failed (exit code {child.exitcode})")
    size = path.stat().st_size
    log(f"generated {ITEMS:,} items, {size / 1e6:.1f} MB, in {time.monotonic() - started:.1f} s")
    results.update(items=ITEMS, file_mb=round(size / 1e6, 1))


def phase_import(results: dict, path: Path) -> None:
    from personalization.ingest.services import ImportProgress, import_job_create, import_job_run

    last_log = [0.0]

    def progress(state: ImportProgress) -> None:
        if time.monotonic() - last_log[0] >= 2:
            last_log[0] = time.monotonic()
            log(f"import: {state.fraction:.0%}, {state.rows_seen:,} rows, {state.created:,} created")

    job = import_job_create(format="jsonl", target="content", path=path, options={"source": SOURCE})
    profiler = None
    if PROFILE:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    started = time.monotonic()
    job = import_job_run(job_id=job.pk, on_batch=progress)
    seconds = time.monotonic() - started
    if profiler is not None:
        import pstats

        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats(os.environ.get("BENCH_PROFILE_SORT", "cumulative")).print_stats(30)
    if job.status != "succeeded":
        raise SystemExit(f"import job {job.pk} {job.status}: {job.error}")
    log(
        f"imported {job.rows_seen:,} rows in {seconds:.1f} s: {job.created_count:,} created, "
        f"{job.updated_count:,} updated, {job.skipped_count:,} skipped, {job.failed_count:,} failed"
    )
    results.update(
        import_seconds=round(seconds, 2),
        import_items_per_s=round(job.rows_seen / seconds, 1),
        created=job.created_count,
        updated=job.updated_count,
        skipped=job.skipped_count,
        failed=job.failed_count,
    )


def phase_embed(results: dict) -> None:
    import torch

    from personalization.embeddings import services
    from personalization.embeddings.backends import embedder_get
    from personalization.models import Content

    embedder = embedder_get()  # loaded once per process, as in the worker; not timed
    embedder.encode(["warm up"] * 8)
    ids = list(Content.objects.filter(source=SOURCE).order_by("id").values_list("id", flat=True))
    batch = 500  # the import's batch size: one enqueued contents_embed task per batch
    platform_s = raw_s = 0.0
    last_log = time.monotonic()
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        started = time.perf_counter()
        stored = services.contents_embed(content_ids=chunk)
        platform_s += time.perf_counter() - started
        assert stored == len(chunk), (stored, len(chunk))
        rows = Content.objects.filter(id__in=chunk).order_by("id").values_list("title", "summary", "body")
        texts = [services.content_embedding_text(title=t, summary=s, body=b) for t, s, b in rows]
        started = time.perf_counter()
        embedder.model.encode(
            texts, batch_size=embedder.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip
        raw_s += time.perf_counter() - started
        if time.monotonic() - last_log >= 10:
            last_log = time.monotonic()
            log(f"embed: {start + len(chunk):,} of {len(ids):,} items")
    pending = services.contents_pending_embedding().filter(source=SOURCE).count()
    if pending:
        raise SystemExit(f"{pending} imported items still have no current embedding")
    log(f"embedded {len(ids):,} items: platform {platform_s:.1f} s, bare encode {raw_s:.1f} s")
    results.update(
        embed_model=embedder.name,
        embed_threads=torch.get_num_threads(),
        embed_batch_size=embedder.batch_size,
        embed_seconds=round(platform_s, 2),
        raw_encode_seconds=round(raw_s, 2),
        embed_items_per_s=round(len(ids) / platform_s, 1),
        raw_encode_items_per_s=round(len(ids) / raw_s, 1),
        embed_overhead=round(platform_s / raw_s, 3),
    )


def main() -> None:
    setup()
    from django.db import connection

    results: dict = {"database": connection.vendor}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        path = Path(tmp) / "items.jsonl"
        phase_generate(results, path)
        phase_import(results, path)
    if EMBED:
        phase_embed(results)
    results["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
