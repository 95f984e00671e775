"""The chat websocket protocol (docs/protocol.md): frames in, typed commands out, events as dicts.

Parsing checks shapes and types and raises `ChatError` with the protocol's codes; rules that need
the database (whose conversation, whose message) stay in the services.
"""

import json
from dataclasses import dataclass

from .services import FEEDBACK_REASONS, MAX_COMMENT_CHARS, ChatError, check_client_id, check_text

PROTOCOL_VERSION = 1
MAX_ID = 2**63 - 1  # a BIGINT primary key; larger ids cannot exist and must not reach the database


@dataclass(frozen=True)
class SendMessage:
    text: str
    client_id: str  # "" when the client sent none
    conversation_id: int | None
    decoding: dict | None = None  # {"profile": name, field: value, ...}, checked against bounds by the consumer


@dataclass(frozen=True)
class RateReply:
    message_id: int
    rating: int
    reasons: list[str]
    comment: str


@dataclass(frozen=True)
class FetchHistory:
    conversation_id: int
    after_id: int


@dataclass(frozen=True)
class StopReply:
    pass


Command = SendMessage | RateReply | FetchHistory | StopReply


def decode_frame(text_data: str | None, bytes_data: bytes | None) -> dict:
    """The JSON object a text frame holds; ChatError for a binary frame or anything but an object."""
    if text_data is None:
        raise ChatError("binary_not_supported", "Frames must be UTF-8 text holding a JSON object.")
    try:
        data = json.loads(text_data)
    except ValueError:
        raise ChatError("invalid_json", "The frame is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ChatError("invalid_json", "The frame must hold a JSON object.")
    return data


def reply_client_id(data: dict) -> str | None:
    """The `client_id` an error about a `message` frame should carry, when the frame had a usable one."""
    if data.get("type") != "message":
        return None
    try:
        return _client_id(data.get("client_id")) or None
    except ChatError:
        return None


def _required(data: dict, name: str) -> object:
    if name not in data or data[name] is None:
        raise ChatError("missing_field", f"'{name}' is required.")
    return data[name]


def _id(value: object, name: str, *, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= MAX_ID:
        raise ChatError("invalid_field", f"'{name}' must be an integer from {minimum}.")
    return value


def _client_id(value: object) -> str:
    client_id = check_client_id(value)
    try:
        client_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ChatError("invalid_field", "'client_id' contains a lone surrogate.") from None
    return client_id


def parse_command(data: dict) -> Command:
    """The command a decoded frame asks for; ChatError with the protocol's code when it is malformed."""
    kind = data.get("type")
    if kind == "message":
        text = check_text(_required(data, "text"))
        conversation_id = data.get("conversation_id")
        decoding = data.get("decoding")
        if decoding is not None and (not isinstance(decoding, dict) or len(decoding) > 16):
            raise ChatError("invalid_decoding", "'decoding' must be an object of at most 16 fields.")
        return SendMessage(
            text=text,
            client_id=_client_id(data.get("client_id")),
            conversation_id=None if conversation_id is None else _id(conversation_id, "conversation_id"),
            decoding=decoding or None,
        )
    if kind == "feedback":
        message_id = _id(_required(data, "message_id"), "message_id")
        rating = _required(data, "rating")
        if isinstance(rating, bool) or rating not in (1, -1):
            raise ChatError("invalid_field", "'rating' must be 1 (helpful) or -1 (not helpful).")
        reasons = data.get("reasons")
        reasons = [] if reasons is None else reasons
        if not isinstance(reasons, list) or any(not isinstance(r, str) or r not in FEEDBACK_REASONS for r in reasons):
            raise ChatError("invalid_field", f"'reasons' must be a list drawn from {sorted(FEEDBACK_REASONS)}.")
        comment = data.get("comment")
        comment = "" if comment is None else comment
        try:
            comment = check_text(comment, field="comment", limit=MAX_COMMENT_CHARS, allow_empty=True)
        except ChatError as exc:
            raise ChatError("invalid_field", exc.detail) from None
        return RateReply(message_id=message_id, rating=int(rating), reasons=sorted(set(reasons)), comment=comment)
    if kind == "history":
        return FetchHistory(
            conversation_id=_id(_required(data, "conversation_id"), "conversation_id"),
            after_id=0 if data.get("after_id") is None else _id(data["after_id"], "after_id", minimum=0),
        )
    if kind == "stop":
        return StopReply()
    if kind is None:
        raise ChatError("unknown_type", "The frame has no 'type'.")
    shown = kind if isinstance(kind, str) and len(kind) <= 40 else "…"
    raise ChatError("unknown_type", f"Unknown type {shown!r}; expected message, feedback, history or stop.")


def event(kind: str, **fields: object) -> str:
    """A server event as the text of one frame."""
    # ASCII escapes keep any stray surrogate from reaching the socket's UTF-8 encoder.
    return json.dumps({"type": kind, **fields}, separators=(",", ":"))
