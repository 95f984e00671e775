"""Dates and relative times, relative to a fixed now: weeks start on Monday, months and years roll over."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from personalization.understanding.dates import DateMention, dates_find

UTC = dt.UTC
# A Wednesday in the first week of a year: "last week" and "last month" reach back into the year before.
NOW = dt.datetime(2026, 1, 7, 15, 30, tzinfo=UTC)


def d(*args: int, tz=UTC) -> dt.datetime:
    return dt.datetime(*args, tzinfo=tz)


def one(text: str, now: dt.datetime = NOW) -> DateMention:
    mentions = dates_find(text, now=now)
    assert len(mentions) == 1, (text, mentions)
    return mentions[0]


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("today", d(2026, 1, 7), d(2026, 1, 8)),
        ("yesterday", d(2026, 1, 6), d(2026, 1, 7)),
        ("this week", d(2026, 1, 5), d(2026, 1, 12)),
        ("last week", d(2025, 12, 29), d(2026, 1, 5)),
        ("next week", d(2026, 1, 12), d(2026, 1, 19)),
        ("this month", d(2026, 1, 1), d(2026, 2, 1)),
        ("last month", d(2025, 12, 1), d(2026, 1, 1)),
        ("last year", d(2025, 1, 1), d(2026, 1, 1)),
        ("since Monday", d(2026, 1, 5), NOW),
        ("over the weekend", d(2026, 1, 3), d(2026, 1, 5)),
        ("in March", d(2025, 3, 1), d(2025, 4, 1)),
        ("last March", d(2025, 3, 1), d(2025, 4, 1)),
        ("in January", d(2026, 1, 1), d(2026, 2, 1)),
        ("last January", d(2025, 1, 1), d(2025, 2, 1)),
        ("on 3 May", d(2025, 5, 3), d(2025, 5, 4)),
        ("May 3rd", d(2025, 5, 3), d(2025, 5, 4)),
        ("the 6th of January", d(2026, 1, 6), d(2026, 1, 7)),
        ("Dec 31, 2025", d(2025, 12, 31), d(2026, 1, 1)),
        ("2024", d(2024, 1, 1), d(2025, 1, 1)),
        ("in March 2024", d(2024, 3, 1), d(2024, 4, 1)),
        ("2024-05-03", d(2024, 5, 3), d(2024, 5, 4)),
        ("2024-05", d(2024, 5, 1), d(2024, 6, 1)),
        ("past 3 days", d(2026, 1, 4, 15, 30), NOW),
        ("the last two weeks", d(2025, 12, 24, 15, 30), NOW),
        ("over the past month", d(2025, 12, 7, 15, 30), NOW),
        ("3 days ago", d(2026, 1, 4), d(2026, 1, 5)),
        ("a week ago", d(2025, 12, 29), d(2026, 1, 5)),
        ("lately", d(2025, 12, 31, 15, 30), NOW),
        ("since last week", d(2025, 12, 29), NOW),
    ],
)
def test_each_form_names_its_interval(text, since, until):
    mention = one(f"Anything {text}?")
    assert (mention.text, mention.since, mention.until) == (text, since, until)
    assert mention.start == len("Anything ") and mention.end == mention.start + len(text)


def interval(text: str, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    mention = one(text, now)
    return mention.since, mention.until


def test_weeks_start_on_monday():
    monday, sunday = d(2026, 1, 5, 0, 1), d(2026, 1, 11, 23, 59)
    for now in (monday, sunday):
        assert interval("this week", now) == (d(2026, 1, 5), d(2026, 1, 12))
    # On a Monday "since Monday" is today; "last Monday" is a week before.
    assert one("since Monday", monday).since == d(2026, 1, 5)
    assert one("last Monday", monday).since == d(2025, 12, 29)
    # On a Sunday the weekend is the one we are in.
    assert interval("over the weekend", sunday) == (d(2026, 1, 10), d(2026, 1, 12))


def test_month_boundaries_and_leap_years():
    assert interval("last month", d(2026, 3, 31)) == (d(2026, 2, 1), d(2026, 3, 1))
    assert one("past month", d(2026, 3, 31, 12)).since == d(2026, 2, 28, 12)  # no 31 February
    assert one("on 29 Feb", d(2026, 1, 7)).since == d(2024, 2, 29)  # the last 29 February there was
    assert one("this month", d(2024, 12, 31, 23, 59)).until == d(2025, 1, 1)
    assert one("next month", d(2024, 12, 15)).since == d(2025, 1, 1)


def test_intervals_are_in_the_timezone_of_now():
    paris = ZoneInfo("Europe/Paris")
    mention = one("today", dt.datetime(2026, 7, 1, 0, 30, tzinfo=paris))
    assert (mention.since, mention.until) == (d(2026, 7, 1, tz=paris), d(2026, 7, 2, tz=paris))
    assert mention.since.utcoffset() == dt.timedelta(hours=2)
    naive = one("today", dt.datetime(2026, 1, 7, 12))
    assert naive.since == d(2026, 1, 7)


def test_several_mentions_keep_their_spans_and_do_not_overlap():
    text = "Port news from last week, and from 2024-05-03 or since March 2024 please"
    mentions = dates_find(text, now=NOW)
    assert [m.text for m in mentions] == ["last week", "2024-05-03", "since March 2024"]
    for m in mentions:
        assert text[m.start : m.end] == m.text and m.since < m.until
    assert mentions[2].until == NOW
    assert mentions[0].iso_interval() == "2025-12-29T00:00:00+00:00/2026-01-05T00:00:00+00:00"


@pytest.mark.parametrize(
    "text",
    [
        "You may like this",  # "may" is a verb
        "A march through town",
        "2,400 homes and 1.5 million",
        "the 31st of Febtober",
        "",
        "nothing here at all",
    ],
)
def test_words_that_only_look_like_dates_are_not_dates(text):
    assert dates_find(text, now=NOW) == []


@pytest.mark.parametrize(
    "text",
    ["x" * 10_000, "\x00today\x00", "😀 today 😀", "<b>today</b>", "今日 сегодня today", "31 February", "9999-12-31"],
)
def test_bad_input_gives_a_result_not_an_exception(text):
    mentions = dates_find(text, now=NOW)
    assert all(text[m.start : m.end] == m.text for m in mentions)
    assert dates_find(None, now=NOW) == []  # type: ignore[arg-type]
