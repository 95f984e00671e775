"""Editors' keyword and regex rules: checked before the intent classifier, and when one matches it decides.

Keywords match whole words or phrases (Unicode-aware, any run of whitespace between the words), regexes
are the `regex` module's. Matching never raises and never hangs the chat path: every search runs with a
timeout, a rule that runs out of time is skipped and logged, and one message has a total time budget.
`rule_pattern_check` is what the admin form calls: it refuses empty patterns, regexes that do not compile,
regexes that match without any text (they would decide every message) and regexes that could backtrack
catastrophically (nested quantifiers, overlapping alternatives under a repeat), found statically.
"""

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import regex
from django.core.exceptions import ValidationError

from personalization.models import KeywordRule

from .regex_safety import backtracking_problem, matches_empty

logger = logging.getLogger(__name__)

RULE_TIMEOUT_S = 0.005  # one rule on one message
TOTAL_BUDGET_S = 0.010  # every rule on one message
MAX_TEXT = 10_000  # characters of a message the rules look at


@dataclass(frozen=True)
class RuleMatch:
    intent: str
    rule_id: int | None
    start: int
    end: int
    text: str


# --- The check the admin form calls ---------------------------------------------------------------------


def rule_pattern_check(*, kind: str, pattern: str) -> None:
    """Raise ValidationError, with a message for an editor, unless `pattern` is a usable rule of `kind`."""
    if kind not in KeywordRule.Kind.values:
        raise ValidationError(f"Unknown kind {kind!r}: choose keyword or regex.")
    if not pattern or not pattern.strip():
        raise ValidationError("Give a pattern: a word or phrase, or a regular expression.")
    if kind == KeywordRule.Kind.KEYWORD:
        return
    # Before compiling: the `regex` module's compiler is itself exponential in deeply nested repeats.
    problem = backtracking_problem(pattern)
    if problem:
        raise ValidationError(
            f"This regular expression could take exponential time on some messages: it has {problem}. "
            "Rewrite it so that each part can match a text in one way only (e.g. a+ instead of (a+)+, "
            "aa? instead of (a|aa))."
        )
    try:
        compiled = regex.compile(pattern)
    except regex.error as exc:
        at = f" at position {exc.pos}" if exc.pos is not None else ""
        raise ValidationError(f"Not a valid regular expression: {exc.msg}{at}.") from exc
    if matches_empty(pattern) or compiled.search("", timeout=RULE_TIMEOUT_S) is not None:
        raise ValidationError(
            "This regular expression can match without any text, so it would decide every message; "
            "make part of it required (e.g. a+ instead of a*)."
        )


# --- Matching ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CompiledRule:
    rule_id: int | None
    intent: str
    kind: str
    pattern: regex.Pattern


def _keyword_regex(phrase: str, *, case_sensitive: bool) -> regex.Pattern:
    words = r"\s+".join(regex.escape(word) for word in phrase.split())
    flags = 0 if case_sensitive else regex.IGNORECASE | regex.FULLCASE
    return regex.compile(rf"(?<!\w){words}(?!\w)", flags)


def _compile(rule) -> _CompiledRule | None:
    """A rule ready to match, or None (logged) when its pattern is unusable."""
    intent = rule.intent if isinstance(rule.intent, str) else rule.intent.name
    rule_id, case_sensitive = getattr(rule, "id", None), getattr(rule, "case_sensitive", False)
    try:
        rule_pattern_check(kind=rule.kind, pattern=rule.pattern)
        if rule.kind == KeywordRule.Kind.KEYWORD:
            pattern = _keyword_regex(rule.pattern, case_sensitive=case_sensitive)
        else:
            pattern = regex.compile(rule.pattern, 0 if case_sensitive else regex.IGNORECASE)
    except (ValidationError, regex.error) as exc:
        logger.warning("Keyword rule %s (%r) skipped: %s", rule_id, rule.pattern, exc)
        return None
    return _CompiledRule(rule_id=rule_id, intent=intent, kind=rule.kind, pattern=pattern)


class RuleSet:
    """Compiled rules in the order they are tried: highest priority first, then lowest id."""

    def __init__(self, rules: list[_CompiledRule]) -> None:
        self.rules = rules

    @classmethod
    def from_rules(cls, rules: Iterable) -> "RuleSet":
        """Rules from `KeywordRule` rows (intent selected with them) or any objects with intent (a name or an
        object with .name), kind and pattern, and optionally id, case_sensitive, priority and enabled."""

        def order(rule) -> tuple[int, float]:
            rule_id = getattr(rule, "id", None)
            return -getattr(rule, "priority", 0), rule_id if rule_id is not None else float("inf")

        usable = sorted((rule for rule in rules if getattr(rule, "enabled", True)), key=order)
        return cls([compiled for compiled in map(_compile, usable) if compiled is not None])

    def __len__(self) -> int:
        return len(self.rules)

    def match(self, text: str) -> RuleMatch | None:
        """The first rule that matches `text`, or None. Never raises; rules that run out of time are skipped."""
        if not isinstance(text, str) or not text or not self.rules:
            return None
        text = text[:MAX_TEXT]
        deadline = time.perf_counter() + TOTAL_BUDGET_S
        for rule in self.rules:
            left = deadline - time.perf_counter()
            if left <= 0:
                logger.warning("Keyword rules: time budget spent before rule %s; the rest are skipped.", rule.rule_id)
                return None
            try:
                found = rule.pattern.search(text, timeout=min(RULE_TIMEOUT_S, left))
            except TimeoutError:
                logger.warning("Keyword rule %s (%r) timed out and was skipped.", rule.rule_id, rule.pattern.pattern)
                continue
            except Exception:  # a rule must never break the chat path
                logger.exception("Keyword rule %s failed and was skipped.", rule.rule_id)
                continue
            if found is not None and found.end() > found.start():
                return RuleMatch(rule.intent, rule.rule_id, found.start(), found.end(), found.group())
        return None


def rules_load() -> RuleSet:
    """The enabled rules of active intents, from the database."""
    rules = KeywordRule.objects.filter(enabled=True, intent__is_active=True).select_related("intent")
    return RuleSet.from_rules(rules)
