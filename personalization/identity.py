"""Who is reading: a signed-in user, or an anonymous reader keyed by a random id kept in the session.

The key lives in the session's data rather than being the session key itself, because Django
rotates the session key at login; the data survives, so the anonymous history can be merged.
"""

import secrets
from dataclasses import dataclass

from django.db.models import Q

SESSION_READER_KEY = "mediachat_reader"


@dataclass(frozen=True)
class ReaderRef:
    user_id: int | None
    session_key: str = ""

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    def owner_q(self, prefix: str = "") -> Q:
        """A filter matching rows owned by this reader (on `prefix` + user / session_key)."""
        if self.user_id is not None:
            return Q(**{f"{prefix}user_id": self.user_id})
        return Q(**{f"{prefix}user__isnull": True, f"{prefix}session_key": self.session_key})

    def owner_fields(self) -> dict:
        """Field values that make a new row belong to this reader."""
        if self.user_id is not None:
            return {"user_id": self.user_id, "session_key": ""}
        return {"user_id": None, "session_key": self.session_key}


def session_reader_key(session, *, create: bool = True) -> str:
    """The anonymous reader key stored in `session`, created (and the session saved) if missing."""
    key = session.get(SESSION_READER_KEY, "")
    if not key and create:
        key = secrets.token_hex(16)
        session[SESSION_READER_KEY] = key
        session.save()
    return key


def reader_from(user, session, *, create: bool = True) -> ReaderRef:
    """The reader behind a request or a websocket scope (blocking: touches the session store)."""
    if user is not None and user.is_authenticated:
        return ReaderRef(user_id=user.pk, session_key=session.get(SESSION_READER_KEY, "") if session else "")
    return ReaderRef(user_id=None, session_key=session_reader_key(session, create=create) if session else "")
