"""Dates and relative times in English text ("this week", "since Monday", "on 3 May", "2024-05-03").

A small grammar of compiled regular expressions; no Django. Every mention becomes a closed-open interval
[since, until) of timezone-aware datetimes in `now`'s timezone (UTC when `now` is naive). Weeks start on
Monday. A date without a year is the most recent such date that is not in the future; a mention that
looks back ("since Monday", "past 3 days", "lately") ends at `now`.
"""

import bisect
import calendar
import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DateMention", "dates_find"]

Interval = tuple[dt.datetime, dt.datetime]

MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
MONTHS |= {name.lower(): i for i, name in enumerate(calendar.month_abbr) if name}
MONTHS["sept"] = 9
WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}
WEEKDAYS |= {name.lower(): i for i, name in enumerate(calendar.day_abbr)}
NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20,
    "thirty": 30, "few": 3, "a few": 3, "couple": 2, "a couple": 2, "a couple of": 2, "couple of": 2, "several": 3,
}  # fmt: skip
MAX_AMOUNT = 100_000  # days; "past 10000000 years" is not a date

_MONTH = r"(?P<month>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_WEEKDAY = r"(?P<weekday>" + "|".join(sorted(WEEKDAYS, key=len, reverse=True)) + r")\.?"
_NUMBER = r"(?P<n>\d{1,6}|" + "|".join(sorted(NUMBERS, key=len, reverse=True)).replace(" ", r"\s+") + ")"
_UNIT = r"(?P<unit>hour|day|week|month|year)s?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
# Trigger words: most messages hold none of them and skip the grammar altogether.
_TRIGGER = re.compile(
    r"\d|day|tomorrow|tonight|hour|week|month|year|recent|lately|ago|since|morning|afternoon|evening|night|"
    + "|".join(sorted(set(MONTHS) | set(WEEKDAYS), key=len, reverse=True)),
    re.IGNORECASE,
)
_SINCE_BEFORE = re.compile(r"(?:\bever\s+)?\bsince\s+$", re.IGNORECASE)


@dataclass(frozen=True)
class DateMention:
    """A date or relative time found in a text: its character span and the interval it names."""

    start: int
    end: int
    text: str
    since: dt.datetime
    until: dt.datetime

    def iso_interval(self) -> str:
        """The interval as ISO 8601 "since/until"."""
        return f"{self.since.isoformat()}/{self.until.isoformat()}"


# --- Calendar arithmetic ------------------------------------------------------------------------------


def _day(now: dt.datetime, delta_days: int = 0) -> dt.datetime:
    """Midnight of the day `delta_days` from now's, in now's timezone."""
    d = now.date() + dt.timedelta(days=delta_days)
    return dt.datetime(d.year, d.month, d.day, tzinfo=now.tzinfo)


def _date(now: dt.datetime, year: int, month: int, day: int = 1) -> dt.datetime:
    return dt.datetime(year, month, day, tzinfo=now.tzinfo)


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _month(now: dt.datetime, year: int, month: int) -> Interval:
    next_year, next_month = _add_months(year, month, 1)
    return _date(now, year, month), _date(now, next_year, next_month)


def _week(now: dt.datetime, weeks: int = 0) -> Interval:
    monday = _day(now, -now.weekday() + 7 * weeks)
    return monday, monday + dt.timedelta(days=7)


def _year(now: dt.datetime, year: int) -> Interval:
    return _date(now, year, 1), _date(now, year + 1, 1)


def _days(start: dt.datetime, days: int = 1) -> Interval:
    return start, start + dt.timedelta(days=days)


def _past_month(now: dt.datetime, month: int, *, strictly: bool) -> Interval:
    """The most recent `month` that has begun (or, `strictly`, that has ended) by now."""
    year = now.year if month < now.month or (month == now.month and not strictly) else now.year - 1
    return _month(now, year, month)


def _past_day(now: dt.datetime, month: int, day: int) -> Interval:
    """The most recent `day` of `month` that is not in the future."""
    year = now.year if (month, day) <= (now.month, now.day) else now.year - 1
    if month == 2 and day == 29:
        while not calendar.isleap(year):
            year -= 1
    return _days(_date(now, year, month, day))


def _amount(text: str) -> int:
    text = " ".join(text.lower().split())
    return int(text) if text.isdigit() else NUMBERS[text]


def _ago(now: dt.datetime, n: int, unit: str) -> dt.datetime:
    n = min(n, MAX_AMOUNT)
    if unit == "hour":
        return now - dt.timedelta(hours=n)
    if unit == "day":
        return now - dt.timedelta(days=n)
    if unit == "week":
        return now - dt.timedelta(weeks=n)
    months = n * (12 if unit == "year" else 1)
    year, month = _add_months(now.year, now.month, -months)
    day = min(now.day, calendar.monthrange(year, month)[1])
    return now.replace(year=year, month=month, day=day)


# --- The grammar: (pattern, interval of a match) -------------------------------------------------


def _relative_day(m: re.Match, now: dt.datetime) -> Interval:
    word = m.group(0).lower()
    if word == "yesterday":
        return _days(_day(now, -1))
    if word == "tomorrow":
        return _days(_day(now, 1))
    if word == "last night":
        return _day(now, -1) + dt.timedelta(hours=18), _day(now) + dt.timedelta(hours=6)
    return _days(_day(now))  # today, tonight, this morning…


def _this_last_next(m: re.Match, now: dt.datetime) -> Interval:
    which, unit = m.group("which").lower(), m.group("unit").lower()
    shift = {"this": 0, "current": 0, "last": -1, "previous": -1, "next": 1}[which]
    if unit == "week":
        return _week(now, shift)
    if unit == "month":
        return _month(now, *_add_months(now.year, now.month, shift))
    return _year(now, now.year + shift)


def _earlier_this(m: re.Match, now: dt.datetime) -> Interval:
    unit = m.group("unit").lower()
    if unit == "week":
        return _week(now)[0], now
    if unit == "month":
        return _date(now, now.year, now.month), now
    return _date(now, now.year, 1), now


def _weekend(m: re.Match, now: dt.datetime) -> Interval:
    which = (m.group("which") or "").lower()
    # The weekend we are in, else the one just gone; "next" is the coming one, "last" the one before this week.
    saturday = _day(now, 5 - now.weekday()) if now.weekday() >= 5 else _day(now, -now.weekday() - 2)
    if which == "next":
        saturday = _day(now, 5 - now.weekday() + (7 if now.weekday() >= 5 else 0))
    elif which == "last" and now.weekday() >= 5:
        saturday -= dt.timedelta(days=7)
    return _days(saturday, 2)


def _weekday(m: re.Match, now: dt.datetime) -> Interval:
    which = (m.group("which") or "").lower()
    target = WEEKDAYS[m.group("weekday").lower()]
    back = (now.weekday() - target) % 7
    if which == "next":
        return _days(_day(now, (target - now.weekday()) % 7 or 7))
    if which == "last" and back == 0:
        back = 7
    return _days(_day(now, -back))


def _month_named(m: re.Match, now: dt.datetime) -> Interval:
    which = (m.group("which") or "").lower()
    month = MONTHS[m.group("month").lower()]
    if m.group("year"):
        return _month(now, int(m.group("year")), month)
    if which == "this":
        return _month(now, now.year, month)
    if which == "next":
        return _month(now, now.year if month > now.month else now.year + 1, month)
    return _past_month(now, month, strictly=which == "last")


def _day_month(m: re.Match, now: dt.datetime) -> Interval:
    month, day = MONTHS[m.group("month").lower()], int(m.group("day"))
    if m.group("year"):
        return _days(_date(now, int(m.group("year")), month, day))
    if not 1 <= day <= calendar.monthrange(2024, month)[1]:
        raise ValueError(f"no day {day} in month {month}")
    return _past_day(now, month, day)


def _iso(m: re.Match, now: dt.datetime) -> Interval:
    year, month = int(m.group("year")), int(m.group("m"))
    if m.group("d"):
        return _days(_date(now, year, month, int(m.group("d"))))
    return _month(now, year, month)


def _year_only(m: re.Match, now: dt.datetime) -> Interval:
    return _year(now, int(m.group("year")))


def _past_amount(m: re.Match, now: dt.datetime) -> Interval:
    n = _amount(m.group("n")) if m.group("n") else 1
    return _ago(now, n, m.group("unit").lower()), now


def _ago_amount(m: re.Match, now: dt.datetime) -> Interval:
    n, unit = _amount(m.group("n")), m.group("unit").lower()
    then = _ago(now, n, unit)
    if unit == "hour":
        hour = then.replace(minute=0, second=0, microsecond=0)
        return hour, hour + dt.timedelta(hours=1)
    if unit == "week":
        return _week(then)
    if unit == "month":
        return _month(now, then.year, then.month)
    if unit == "year":
        return _year(now, then.year)
    return _days(_day(then))


def _recent(m: re.Match, now: dt.datetime) -> Interval:
    return now - dt.timedelta(days=7), now


def _rx(pattern: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])(?:" + pattern + r")(?![\w-])", re.IGNORECASE)


_THE = r"(?:(?:over|during|in|for)\s+)?(?:the\s+)?"
GRAMMAR: tuple[tuple[re.Pattern, Callable[[re.Match, dt.datetime], Interval]], ...] = (
    (_rx(r"today|yesterday|tomorrow|tonight|last\s+night|this\s+(?:morning|afternoon|evening)"), _relative_day),
    (_rx(r"(?P<which>this|current|last|previous|next)\s+(?P<unit>week|month|year)"), _this_last_next),
    (_rx(r"earlier\s+this\s+(?P<unit>week|month|year)"), _earlier_this),
    (_rx(r"(?:(?:over|at|during|on)\s+)?(?:the\s+|(?P<which>this|last|next)\s+)weekend"), _weekend),
    (_rx(r"(?:on\s+)?(?:(?P<which>last|next|this)\s+)?" + _WEEKDAY), _weekday),
    (
        _rx(r"(?:(?:in|during)\s+)?(?:(?P<which>last|this|next)\s+)?" + _MONTH + r"(?:,?\s+" + _YEAR + ")?"),
        _month_named,
    ),
    (_rx(r"(?:on\s+)?(?:the\s+)?" + _DAY + r"(?:\s+of)?\s+" + _MONTH + r"(?:,?\s+" + _YEAR + ")?"), _day_month),
    (_rx(r"(?:on\s+)?" + _MONTH + r"\s+" + _DAY + r"(?:,?\s+" + _YEAR + ")?"), _day_month),
    (_rx(_YEAR + r"-(?P<m>0[1-9]|1[0-2])(?:-(?P<d>[0-3]\d)(?:[T ][\d:.]+(?:Z|[+-]\d\d:?\d\d)?)?)?"), _iso),
    (_rx(r"(?:in\s+)?" + _YEAR + r"(?![.,]\d)"), _year_only),
    (_rx(_THE + r"(?:past|last)\s+(?:" + _NUMBER + r"\s+)?" + _UNIT), _past_amount),
    (_rx(_NUMBER + r"\s+" + _UNIT + r"\s+ago"), _ago_amount),
    (_rx(r"recently|lately|(?:in\s+)?recent\s+(?:days|weeks|times)"), _recent),
)
# A bare month name is also a word ("may", "march"): only with a preposition, a qualifier, a year or a day.
_AMBIGUOUS_MONTHS = {
    "may",
    "march",
    "jan",
    "mar",
    "jun",
    "jul",
    "aug",
    "sep",
    "sept",
    "oct",
    "nov",
    "dec",
    "feb",
    "apr",
}
_AMBIGUOUS_WEEKDAYS = {"sun", "sat", "wed", "mon", "fri", "thu", "tue"}


def _is_word_only(m: re.Match) -> bool:
    """A match that is nothing but an ambiguous month or weekday word ("may", "sun")."""
    word = m.group(0).lower().rstrip(".")
    return word in _AMBIGUOUS_MONTHS or word in _AMBIGUOUS_WEEKDAYS


def dates_find(text: str, *, now: dt.datetime) -> list[DateMention]:
    """Dates and relative times in `text`, in order, without overlaps (the longest match wins).

    Spans are character offsets into `text`; intervals are closed-open and computed relative to `now`.
    Never raises: text that is not a string, or that holds nothing date-like, gives an empty list.
    """
    if not isinstance(text, str) or not text or not _TRIGGER.search(text):
        return []
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    found: list[tuple[int, int, Interval]] = []
    for pattern, interval in GRAMMAR:
        for m in pattern.finditer(text):
            if _is_word_only(m):
                continue
            try:
                since, until = interval(m, now)
            except (ValueError, OverflowError, KeyError):
                continue  # 31 February, year 10000…
            found.append((m.start(), m.end(), (since, until)))
    found.sort(key=lambda f: (f[0] - f[1], f[0]))
    taken: list[tuple[int, int, Interval]] = []  # sorted by start, never overlapping
    for start, end, span in found:
        i = bisect.bisect_right(taken, start, key=lambda t: t[0])
        if (i and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
            continue
        taken.insert(i, (start, end, span))
    mentions = []
    for start, end, (since, until) in taken:
        window = max(0, start - 30)
        before = _SINCE_BEFORE.search(text[window:start]) if start else None
        if before and since < now:
            start, until = window + before.start(), now
        mentions.append(DateMention(start, end, text[start:end], since, until))
    return mentions
