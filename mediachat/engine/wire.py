"""The wire between web processes and `run_engine` processes: the messages, their codecs, the channel layer.

The client is `remote.ChannelLayerEngine` (in web processes), the server `remote_server.EngineServer` (in
`run_engine` processes). The channel layer delivers at most once, each channel holds a bounded number of
messages, and the web process's reply channels share one Redis list; so the server numbers every message
of a reply and speaks at least every `HEARTBEAT_S`, and the client takes a gap in the numbers for lost
messages. Wire messages (msgpack-able dicts):

    web → ENGINE_CHANNEL   engine.request  id, reply, expires, v, request, hops
    engine → reply         engine.accepted id, server, seq, engine, model_version_id
                           engine.pieces   id, seq, pieces          engine.alive  id, seq
                           engine.result   id, seq, pieces, result  engine.error  id, seq, code, detail, retry_after_ms
    web → server           engine.cancel   id      (the task iterating the reply was cancelled)

Every engine → reply message also carries `id` and `server`; the first (seq 0) says that the request is
taken, by which process and with which model. `v` is `WIRE_VERSION`; `request` and `result` are written
by the codecs here, and an `engine.error`'s `code` names an `EngineError` subclass (`error_from_wire`).
"""

import dataclasses

from channels.layers import BaseChannelLayer, InMemoryChannelLayer, get_channel_layer

from .base import (
    Citation,
    EngineBusy,
    EngineError,
    EngineRequest,
    EngineResult,
    EngineTimeout,
    Recommendation,
    Turn,
)
from .decoding import DecodingParams

WIRE_VERSION = 1
HEARTBEAT_S = 2.0  # the server speaks at least this often while a reply is in flight
BUSY_RETRY_MS = 1000


class EngineUnavailable(EngineError):
    """No engine process took the request, or the one serving it stopped answering."""

    code = "engine_unavailable"


class StreamBroken(EngineError):
    """Messages of the reply were lost on the way (the channel layer delivers at most once)."""

    code = "engine_stream_broken"


# --- codecs ---------------------------------------------------------------------------------------


def request_to_wire(request: EngineRequest) -> dict:
    """`request` as a msgpack-able dict (tuples become lists on the way)."""
    return dataclasses.asdict(request)


def request_from_wire(data: dict) -> EngineRequest:
    """The `EngineRequest` that `request_to_wire` wrote."""
    decoding = data.get("decoding")
    if decoding is not None:
        known = {f.name for f in dataclasses.fields(DecodingParams)}
        decoding = DecodingParams(**{k: v for k, v in decoding.items() if k in known})
    return EngineRequest(
        text=data["text"],
        history=tuple(Turn(t["role"], t["text"], tuple(t.get("cited") or ())) for t in data.get("history") or ()),
        reader_authenticated=bool(data.get("reader_authenticated")),
        decoding=decoding,
        reply_id=data.get("reply_id"),
        conversation_id=data.get("conversation_id"),
        origin=data.get("origin") or "",
    )


def result_to_wire(result: EngineResult) -> dict:
    """`result` as a msgpack-able dict."""
    return dataclasses.asdict(result)


def result_from_wire(data: dict) -> EngineResult:
    """The `EngineResult` that `result_to_wire` wrote."""
    fields = {f.name for f in dataclasses.fields(EngineResult)} - {"cited", "recommendations"}
    return EngineResult(
        **{k: v for k, v in data.items() if k in fields},
        cited=[Citation(**c) for c in data.get("cited") or ()],
        recommendations=[Recommendation(**r) for r in data.get("recommendations") or ()],
    )


_ERRORS: dict[str, type[EngineError]] = {
    cls.code: cls for cls in (EngineBusy, EngineTimeout, EngineUnavailable, StreamBroken)
}


def error_from_wire(message: dict) -> EngineError:
    """The `EngineError` subclass an `engine.error` message names; unknown codes keep their code."""
    code = message.get("code") or EngineError.code
    error = _ERRORS.get(code, EngineError)(message.get("detail") or "", retry_after_ms=message.get("retry_after_ms"))
    error.code = code
    return error


def real_layer() -> BaseChannelLayer:
    """The default channel layer, refusing one that cannot reach another process."""
    layer = get_channel_layer()
    if layer is None or isinstance(layer, InMemoryChannelLayer):
        raise EngineUnavailable(
            "The engine runs in its own process only over a shared channel layer (set REDIS_URL); "
            "the in-memory layer cannot reach another process."
        )
    return layer
