"""Continuous batching: one thread runs one forward pass per decoding step for every running request.

Requests join and leave at step boundaries. The running batch keeps one left-padded KV cache whose rows are
right-aligned (every row's newest token sits in the last column), so a decoding step is a single forward pass of
one token per row, written into spare cache columns. New requests are prefilled in groups of similar length, then
merged by left-padding the two caches to a common length; finished rows are removed by index and leading columns
that are padding in every row are trimmed away.
Attention masks hide the padding and position ids count each row's real tokens, so a greedy reply equals
`model.generate`'s for the same prompt. Beam search takes its own path: `model.generate(num_beams=...)` on a
single worker thread, its tokens delivered when it is done. docs/engine.md says why this and not transformers'
own continuous batching.

Plain Python and torch: no Django imports.
"""

import inspect
import itertools
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from .decoding import DecodingParams, Strategy, generate_kwargs
from .loading import max_context_of
from .sampling import next_tokens

log = logging.getLogger(__name__)


class Reason:
    EOS = "eos"  # the model wrote an end-of-turn (or other eos) token
    LENGTH = "length"  # max_new_tokens reached, or the model's context is full
    CANCELLED = "cancelled"  # cancel() or stop()
    ERROR = "error"  # this request failed; `Finish.error` says why


@dataclass(frozen=True)
class Finish:
    reason: str  # one of Reason
    completion_tokens: int  # tokens the model generated for this request, the eos token included
    prompt_tokens: int
    error: str = ""  # why, when reason is "error"


class QueueFull(Exception):
    """The scheduler holds `max_queue` requests already; try again after `retry_after_ms`."""

    def __init__(self, retry_after_ms: int):
        super().__init__(f"The generation queue is full; retry after {retry_after_ms} ms.")
        self.retry_after_ms = retry_after_ms


class SchedulerStopped(RuntimeError):
    """submit() after stop() or during drain()."""


@dataclass(eq=False)
class _Request:
    id: int
    input_ids: list[int]
    params: DecodingParams
    on_token: Callable[[int], None]
    on_done: Callable[[Finish], None]
    max_new_tokens: int = 0  # params.max_new_tokens, capped by the room left in the model's context
    generated: int = 0
    cancelled: bool = False
    done: bool = False
    generator: torch.Generator | None = None


class _BufferLayer(DynamicLayer):
    """One layer's keys and values [B, heads, L, head_dim] as views of buffers with spare columns.

    transformers' DynamicLayer concatenates on every step, copying the whole cache into a fresh allocation: that
    copy was 70% of a decoding step's CPU time at batch 16 (measured, docs/engine.md). Writing the new column into
    spare room makes a step's cache cost proportional to what it adds.
    """

    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, spare: int):
        super().__init__()
        self.reset_to(keys, values, spare)

    def reset_to(self, keys: torch.Tensor, values: torch.Tensor, spare: int) -> None:
        """Hold copies of `keys` and `values` with room for `spare` more columns."""
        batch, heads, length, dim = keys.shape
        self._keys = keys.new_empty((batch, heads, length + spare, dim))
        self._values = values.new_empty((batch, values.shape[1], length + spare, values.shape[3]))
        self._keys[:, :, :length] = keys
        self._values[:, :, :length] = values
        self.length = length
        self.device = keys.device
        self.is_initialized = True
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self.length]
        self.values = self._values[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        added = key_states.shape[-2]
        if self.length + added > self._keys.shape[-2]:
            self.reset_to(self.keys, self.values, spare=max(added, self.length // 2, 32))
        self._keys[:, :, self.length : self.length + added] = key_states
        self._values[:, :, self.length : self.length + added] = value_states
        self.length += added
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_max_length(self) -> int:
        return -1


def _buffer_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], spare: int) -> Cache:
    """A transformers Cache whose layers are `_BufferLayer`s holding copies of `layers` (keys, values) pairs."""
    return Cache(layers=[_BufferLayer(keys, values, spare) for keys, values in layers])


class _Batch:
    """The running rows and their shared, left-padded, right-aligned KV cache (scheduler thread only)."""

    def __init__(self, requests, cache, mask, positions, pending, seen, penalty):
        self.requests: list[_Request] = requests
        self.cache = cache  # per layer keys/values [B, heads, L, head_dim]: _BufferLayers (a DynamicCache in prefill)
        self.mask = mask  # [B, L] long: 1 for real tokens held in the cache, 0 for padding
        self.positions = positions  # [B] long: real tokens in the cache = position of the pending token
        self.pending = pending  # [B] long: the last chosen token of each row, not yet in the cache
        self.seen = seen  # [B, V] bool: tokens in each row's sequence, for the repetition penalty
        self.penalty = penalty  # [B, 1] float: each row's repetition penalty

    def __len__(self) -> int:
        return len(self.requests)

    def select(self, keep: list[int]) -> None:
        """Keep only the rows `keep` (in that order), then trim columns that are padding in every row."""
        index = torch.tensor(keep, dtype=torch.long, device=self.mask.device)
        self.requests = [self.requests[i] for i in keep]
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.pending = self.pending.index_select(0, index)
        self.seen = self.seen.index_select(0, index)
        self.penalty = self.penalty.index_select(0, index)
        lead = self.mask.shape[1] - int(self.positions.max())
        self.mask = self.mask[:, lead:]
        spare = self.spare()
        for layer in self.cache.layers:
            layer.reset_to(
                layer.keys.index_select(0, index)[:, :, lead:], layer.values.index_select(0, index)[:, :, lead:], spare
            )

    def spare(self) -> int:
        """Cache columns to reserve: what the longest remaining reply may still add, within reason."""
        remaining = max((r.max_new_tokens - r.generated for r in self.requests), default=0)
        return max(8, min(remaining + 1, 128))

    def merge(self, other: "_Batch") -> None:
        """Append `other`'s rows, left-padding whichever cache is shorter so both end in the same column."""
        length = max(self.mask.shape[1], other.mask.shape[1])

        def pad(tensor: torch.Tensor, columns: int, dim_from_end: int) -> torch.Tensor:
            if columns == 0:
                return tensor
            return F.pad(tensor, (0, 0) * dim_from_end + (columns, 0))

        grow_self, grow_other = length - self.mask.shape[1], length - other.mask.shape[1]
        self.mask = torch.cat([pad(self.mask, grow_self, 0), pad(other.mask, grow_other, 0)])
        self.requests += other.requests
        spare = self.spare()
        for mine, theirs in zip(self.cache.layers, other.cache.layers, strict=True):
            mine.reset_to(
                torch.cat([pad(mine.keys, grow_self, 1), pad(theirs.keys, grow_other, 1)]),
                torch.cat([pad(mine.values, grow_self, 1), pad(theirs.values, grow_other, 1)]),
                spare,
            )
        self.positions = torch.cat([self.positions, other.positions])
        self.pending = torch.cat([self.pending, other.pending])
        self.seen = torch.cat([self.seen, other.seen])
        self.penalty = torch.cat([self.penalty, other.penalty])


def prefill_groups(requests: list, *, waste: float = 0.2) -> list[list]:
    """`requests` (anything with `input_ids`) split into prefill groups, shortest prompts first.

    A prefill pads every prompt of a group to the longest, and padding costs as much compute as real tokens; a
    group grows while its padding stays within `waste` of its real tokens, so prompts of similar length share a
    forward pass and a long one does not make many short ones pay for its length.
    """
    groups: list[list] = []
    group: list = []
    real = 0
    for request in sorted(requests, key=lambda r: len(r.input_ids)):
        length = len(request.input_ids)  # the longest so far, as they come sorted
        if group and length * (len(group) + 1) > (1 + waste) * (real + length):
            groups.append(group)
            group, real = [], 0
        group.append(request)
        real += length
    if group:
        groups.append(group)
    return groups


def eos_ids_of(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends a reply: `<|end|>` when the tokenizer has it, its eos, and the generation config's."""
    ids: list[int] = []
    vocab = tokenizer.get_vocab()
    if "<|end|>" in vocab:
        ids.append(vocab["<|end|>"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(config_eos, int):
        ids.append(config_eos)
    elif config_eos:
        ids.extend(int(i) for i in config_eos)
    return list(dict.fromkeys(ids))


class BatchScheduler:
    """Generates for many requests at once on its own daemon thread; callbacks run on that thread.

    `max_batch` requests decode together; up to `max_queue` are held in all (waiting, running, beam search).
    `eos_token_ids` replaces the ids that end a reply (default `eos_ids_of`; an empty list never stops early,
    as a benchmark wants). `max_context` replaces the model's position limit.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        device: str | torch.device | None = None,
        eos_token_ids: Iterable[int] | None = None,
        max_context: int | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.eos_ids = list(eos_token_ids) if eos_token_ids is not None else eos_ids_of(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.eos_ids[0] if self.eos_ids else 0)
        self.max_context = max_context or max_context_of(model.config, tokenizer)
        self.vocab_size = model.get_input_embeddings().num_embeddings
        self._eos = frozenset(self.eos_ids)
        # Only the last position's logits are needed; models that predate `logits_to_keep` compute them all.
        accepts = inspect.signature(model.forward).parameters
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in accepts else {}
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._by_id: dict[int, _Request] = {}  # every request not yet finished
        self._beam_done: deque[tuple[_Request, list[int] | None, str]] = deque()
        self._stopping = False
        self._draining = False  # drain(): no new requests
        self._step_ms = 0.0  # moving average of one decoding step, for the retry hint
        self._batch: _Batch | None = None
        self._beam_queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._beam_thread = threading.Thread(target=self._beam_run, name="batch-scheduler-beam", daemon=True)
        self._thread.start()
        self._beam_thread.start()

    # Public API, callable from any thread.

    def submit(
        self,
        input_ids: list[int],
        params: DecodingParams,
        *,
        on_token: Callable[[int], None],
        on_done: Callable[[Finish], None],
    ) -> int:
        """Queue a request; returns its id. Tokens go to `on_token`, then `on_done` is called exactly once.

        Raises QueueFull when `max_queue` requests are held already, SchedulerStopped after stop().
        """
        with self._cond:
            if self._stopping or self._draining:
                raise SchedulerStopped("The batch scheduler has stopped.")
            if len(self._by_id) >= self.max_queue:
                raise QueueFull(self._retry_after_ms())
            request = _Request(next(self._ids), list(input_ids), params, on_token, on_done)
            self._by_id[request.id] = request
            self._waiting.append(request)
            self._cond.notify()
            return request.id

    def cancel(self, request_id: int) -> bool:
        """Ask request `request_id` to stop; it leaves at the next step boundary with reason "cancelled".

        Returns False when the request is unknown or already finished.
        """
        with self._cond:
            request = self._by_id.get(request_id)
            if request is None:
                return False
            request.cancelled = True
            self._cond.notify()
            return True

    def stop(self, timeout: float = 10.0) -> None:
        """End the scheduler thread; every request not finished gets on_done with reason "cancelled"."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        for thread in (self._thread, self._beam_thread):
            if thread is not threading.current_thread():  # stop() from a callback cannot wait for itself
                thread.join(timeout)

    def drain(self, timeout: float | None = None) -> bool:
        """Refuse new requests, let every held one finish, then stop; for swapping models at a request boundary.

        Returns True when all finished within `timeout` seconds; those still running then are cancelled.
        """
        with self._cond:
            self._draining = True
            drained = self._cond.wait_for(lambda: not self._by_id, timeout)
        self.stop()
        return drained

    @property
    def load(self) -> tuple[int, int]:
        """(requests held in all, requests decoding in the running batch) — a snapshot."""
        with self._cond:
            batch = self._batch
            return len(self._by_id), len(batch) if batch is not None else 0

    # The scheduler thread.

    def _retry_after_ms(self) -> int:
        batch = self._batch
        if batch is None or not self._step_ms:
            return 1000
        remaining = min((r.max_new_tokens - r.generated for r in batch.requests), default=1)
        return max(50, math.ceil(self._step_ms * max(remaining, 1)))

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._cycle():
                    pass
        except Exception:  # a bug here must not leave callers waiting forever
            log.exception("The batch scheduler failed.")
        finally:
            self._shutdown()

    def _cycle(self) -> bool:
        """One step boundary: deliver beam results, drop cancelled rows, admit, decode one step."""
        with self._cond:
            while not (self._stopping or self._waiting or self._batch or self._beam_done):
                self._cond.wait()
            if self._stopping:
                return False
            room = self.max_batch - (len(self._batch) if self._batch else 0)
            admitted: list[_Request] = []
            while self._waiting and len(admitted) < room:
                admitted.append(self._waiting.popleft())
            beam_done = list(self._beam_done)
            self._beam_done.clear()
            withdrawn = [r for r in self._waiting if r.cancelled]
            for request in withdrawn:
                self._waiting.remove(request)
        for request in withdrawn:
            self._finish(request, Reason.CANCELLED)
        for request, tokens, error in beam_done:
            self._beam_deliver(request, tokens, error)
        if self._batch is not None:
            self._drop([i for i, r in enumerate(self._batch.requests) if r.cancelled or r.done])
        self._admit(admitted)
        if self._batch is not None:
            self._step()
        return True

    def _finish(self, request: _Request, reason: str, error: str = "") -> None:
        if request.done:
            return
        request.done = True
        with self._cond:
            self._by_id.pop(request.id, None)
            if self._draining and not self._by_id:
                self._cond.notify_all()
        if reason == Reason.ERROR:
            log.warning("Generation request %s failed: %s", request.id, error)
        try:
            request.on_done(Finish(reason, request.generated, len(request.input_ids), error))
        except Exception:
            log.exception("on_done of request %s raised.", request.id)

    def _drop(self, rows: list[int]) -> None:
        """Remove `rows` from the running batch (finishing as cancelled any not finished yet)."""
        batch = self._batch
        if not rows or batch is None:
            return
        for i in rows:
            self._finish(batch.requests[i], Reason.CANCELLED)
        gone = set(rows)
        keep = [i for i in range(len(batch)) if i not in gone]
        if keep:
            batch.select(keep)
        else:
            self._batch = None

    def _check(self, request: _Request) -> str:
        """Why `request` cannot run, or "" — checked before it reaches the model (a bad id on CUDA is fatal)."""
        n = len(request.input_ids)
        if n == 0:
            return "The prompt is empty."
        if min(request.input_ids) < 0 or max(request.input_ids) >= self.vocab_size:
            return f"The prompt holds token ids outside the model's vocabulary of {self.vocab_size}."
        if n >= self.max_context:
            return f"The prompt of {n} tokens leaves no room in the model's context of {self.max_context} tokens."
        return ""

    def _admit(self, admitted: list[_Request]) -> None:
        ready: list[_Request] = []
        for request in admitted:
            problem = self._check(request)
            if request.cancelled:
                self._finish(request, Reason.CANCELLED)
            elif problem:
                self._finish(request, Reason.ERROR, problem)
            else:
                request.max_new_tokens = min(request.params.max_new_tokens, self.max_context - len(request.input_ids))
                if request.params.strategy == Strategy.SAMPLE and request.params.seed is not None:
                    request.generator = torch.Generator(device=self.device).manual_seed(request.params.seed)
                if request.params.strategy == Strategy.BEAM:
                    self._beam_queue.put(request)
                else:
                    ready.append(request)
        for group in prefill_groups(ready):
            try:
                self._prefill(group)
            except Exception as exc:
                if len(group) == 1:
                    self._finish(group[0], Reason.ERROR, f"{type(exc).__name__}: {exc}")
                    continue
                for request in group:  # find the culprit: each alone
                    self._admit_alone(request)

    def _admit_alone(self, request: _Request) -> None:
        try:
            self._prefill([request])
        except Exception as exc:
            self._finish(request, Reason.ERROR, f"{type(exc).__name__}: {exc}")

    def _prefill(self, requests: list[_Request]) -> None:
        """Run the prompts of `requests` as one left-padded batch, choose their first tokens, join the batch."""
        lengths = [len(r.input_ids) for r in requests]
        width = max(lengths)
        ids = torch.full((len(requests), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            ids[row, width - lengths[row] :] = torch.tensor(request.input_ids, dtype=torch.long)
            mask[row, width - lengths[row] :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            **self._keep_last,
        )
        logits = out.logits[:, -1, :].float()
        seen = torch.zeros((len(requests), logits.shape[-1]), dtype=torch.bool, device=self.device)
        # Padding columns repeat the row's last real token, so the pad id is not marked as seen.
        seen.scatter_(1, torch.where(mask.bool(), ids, ids[:, -1:]), True)
        penalty = torch.tensor(
            [[r.params.repetition_penalty] for r in requests], dtype=torch.float32, device=self.device
        )
        positions = torch.tensor(lengths, dtype=torch.long, device=self.device)
        pending = torch.zeros(len(requests), dtype=torch.long, device=self.device)
        fresh = _Batch(list(requests), cache, mask, positions, pending, seen, penalty)
        self._accept(fresh, logits)
        if self._batch is None:
            fresh.cache = _buffer_cache([(layer.keys, layer.values) for layer in cache.layers], fresh.spare())
            self._batch = fresh
        else:
            self._batch.merge(fresh)
        self._drop([i for i, r in enumerate(self._batch.requests) if r.done])

    def _accept(self, batch: _Batch, logits: torch.Tensor) -> None:
        """Choose each row's next token from `logits` [B, V], deliver it, and mark rows that are finished."""
        chosen = next_tokens(
            logits,
            seen=batch.seen,
            penalty=batch.penalty,
            params=[r.params for r in batch.requests],
            generators=[r.generator for r in batch.requests],
        )
        tokens = torch.tensor(chosen, dtype=torch.long, device=self.device)
        batch.pending = tokens
        batch.seen[torch.arange(len(chosen), device=self.device), tokens] = True
        for request, token in zip(batch.requests, chosen, strict=True):
            request.generated += 1
            if token in self._eos:
                self._finish(request, Reason.EOS)
                continue
            try:
                request.on_token(token)
            except Exception as exc:
                self._finish(request, Reason.ERROR, f"on_token raised {type(exc).__name__}: {exc}")
                continue
            if request.generated >= request.max_new_tokens:
                self._finish(request, Reason.LENGTH)

    def _step(self) -> None:
        """One decoding step: a single forward pass of every row's pending token."""
        batch = self._batch
        started = time.perf_counter()
        ones = torch.ones((len(batch), 1), dtype=torch.long, device=self.device)
        mask = torch.cat([batch.mask, ones], dim=1)
        try:
            out = self.model(
                input_ids=batch.pending[:, None],
                attention_mask=mask,
                position_ids=batch.positions[:, None],
                cache=batch.cache,
                use_cache=True,
                **self._keep_last,
            )
        except Exception as exc:  # a failed step cannot be pinned on one row: the whole batch fails
            for request in batch.requests:
                self._finish(request, Reason.ERROR, f"{type(exc).__name__}: {exc}")
            self._batch = None
            return
        batch.mask = mask
        batch.positions = batch.positions + 1
        self._accept(batch, out.logits[:, -1, :].float())
        self._drop([i for i, r in enumerate(batch.requests) if r.done])
        elapsed_ms = (time.perf_counter() - started) * 1000
        self._step_ms = elapsed_ms if not self._step_ms else 0.9 * self._step_ms + 0.1 * elapsed_ms

    def _shutdown(self) -> None:
        with self._cond:
            self._stopping = True
            outstanding = list(self._by_id.values())
            self._waiting.clear()
        for request in outstanding:
            request.cancelled = True
        self._beam_queue.put(None)
        for request in outstanding:
            self._finish(request, Reason.CANCELLED)
        self._batch = None

    # The beam-search path.

    def _beam_run(self) -> None:
        from transformers import StoppingCriteria, StoppingCriteriaList

        class Cancelled(StoppingCriteria):
            def __init__(self, request: _Request):
                self.request = request

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
                return torch.full(
                    (input_ids.shape[0],), self.request.cancelled, dtype=torch.bool, device=input_ids.device
                )

        while True:
            request = self._beam_queue.get()
            if request is None:
                return
            tokens, error = None, ""
            if not request.cancelled:
                try:
                    tokens = self._beam_generate(request, StoppingCriteriaList([Cancelled(request)]))
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self._beam_done.append((request, tokens, error))
                self._cond.notify()

    def _beam_generate(self, request: _Request, stopping: Any) -> list[int]:
        kwargs = generate_kwargs(request.params, eos_token_id=self.eos_ids or None, pad_token_id=self.pad_id)
        kwargs["max_new_tokens"] = request.max_new_tokens
        ids = torch.tensor([request.input_ids], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), stopping_criteria=stopping, **kwargs
            )
        return out[0, ids.shape[1] :].tolist()

    def _beam_deliver(self, request: _Request, tokens: list[int] | None, error: str) -> None:
        if request.done:
            return
        if request.cancelled or tokens is None:
            self._finish(request, Reason.ERROR if error else Reason.CANCELLED, error)
            return
        for token in tokens:
            request.generated += 1
            if token in self._eos:
                self._finish(request, Reason.EOS)
                return
            try:
                request.on_token(token)
            except Exception as exc:
                self._finish(request, Reason.ERROR, f"on_token raised {type(exc).__name__}: {exc}")
                return
        self._finish(request, Reason.LENGTH)
