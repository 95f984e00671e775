"""The generation engine's contract: a request in, text pieces streamed out, then one result.

Plain Python, no Django: an engine gets everything it needs in the `EngineRequest`, and whatever it
looks up (a catalog search, a model's weights) it runs off the event loop itself.
"""

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from .decoding import DecodingParams


@dataclass(frozen=True)
class Turn:
    role: str  # "user" or "assistant", as stored on Message.role
    text: str
    cited: tuple[int, ...] = ()  # assistant turns: the catalog items the reply cited, in order (conversation state)


@dataclass(frozen=True)
class EngineRequest:
    text: str  # the reader's message, validated and stripped
    history: tuple[Turn, ...] = ()  # earlier turns of the conversation, oldest first, as many as asked for
    reader_authenticated: bool = False  # a signed-in reader rather than an anonymous one
    decoding: DecodingParams | None = None  # resolved and checked by the caller; None: the engine's defaults
    reply_id: int | None = None  # the stored reply row, for logs and for engines in another process
    conversation_id: int | None = None
    # Who asks (the socket's channel name): a newer request from the same origin supersedes an older one
    # still in flight, which an engine in another process may then stop before the client's cancel arrives.
    origin: str = ""


@dataclass(frozen=True)
class Citation:
    content_id: int
    title: str
    url: str


@dataclass(frozen=True)
class Recommendation:
    content_id: int
    title: str
    url: str
    summary: str
    kind: str
    section: str
    why: str  # one line for the reader: why this item was picked


@dataclass
class EngineResult:
    text: str  # the whole reply as stored: the pieces joined, less citations grounding removed
    engine: str  # the engine's name, stored on the reply
    cited: list[Citation] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    decoding: dict = field(default_factory=dict)  # decoding parameters used (temperature, top_p, ...)
    intent: str = ""
    confidence: float | None = None
    entities: list = field(default_factory=list)
    model_version_id: int | None = None  # the training.ModelVersion that wrote this reply (set by model engines)
    notice: str = ""  # said to the reader besides the reply, e.g. "the assistant is unavailable"
    # The reader message's understanding (Understanding.as_dict(): intent, confidence, source, entities,
    # model_version_id...), stored on that message with the reply; None when nothing classified it.
    understanding: dict | None = None


class EngineError(Exception):
    """A reply the engine could not write; `code` goes to the reader in an `error` event."""

    code = "engine_error"

    def __init__(self, detail: str, *, retry_after_ms: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.retry_after_ms = retry_after_ms


class EngineBusy(EngineError):
    """The engine's queue is full: try again after `retry_after_ms`."""

    code = "busy"


class EngineTimeout(EngineError):
    """The reply took longer than the engine's per-request limit."""

    code = "timeout"


class Generation(ABC):
    """One reply in progress: `async for piece in generation` streams it; then `result` holds the rest.

    Cancelling the task that iterates must leave nothing running on the engine's behalf beyond what
    cannot be interrupted (a search already in a thread finishes and is discarded).
    """

    def __init__(self) -> None:
        self._result: EngineResult | None = None
        # The ModelVersion writing this reply, set by model engines as soon as it is known, so that a
        # reply interrupted before its result still records which model wrote what was streamed.
        self.model_version_id: int | None = None

    @abstractmethod
    def __aiter__(self) -> AsyncIterator[str]: ...

    def ground(self, text: str) -> str:
        """What to store of `text`, the pieces streamed before the reply was cut short (interrupted).

        Engines that ground citations remove those of items the model was not given; by default, all of it.
        """
        return text

    @property
    def result(self) -> EngineResult:
        """The finished reply; only valid once iteration has ended without error."""
        if self._result is None:
            raise RuntimeError("The generation has not finished.")
        return self._result


class Engine(ABC):
    """A reply writer. One instance serves every socket of a process, so it keeps no per-reply state."""

    name: str = "engine"
    model_version_id: int | None = None  # the training.ModelVersion it serves, stored on every reply

    def history_turns(self, text: str) -> int:
        """How many earlier turns `EngineRequest.history` should carry for the message `text`."""
        return 0

    @abstractmethod
    def start(self, request: EngineRequest) -> Generation:
        """Begin a reply to `request`; nothing runs until the generation is iterated."""
