"""Editors' keyword and regex rules (personalization/understanding/rules.py): what the admin refuses, how rules
match, and that matching never raises or hangs on any message."""

import logging
from dataclasses import dataclass

import pytest
from django.core.exceptions import ValidationError

from personalization.models import Intent, KeywordRule
from personalization.understanding.regex_safety import backtracking_problem
from personalization.understanding.rules import RuleMatch, RuleSet, rule_pattern_check, rules_load


@dataclass
class Rule:
    id: int | None
    intent: str
    kind: str
    pattern: str
    case_sensitive: bool = False
    priority: int = 0
    enabled: bool = True


def keyword(id, intent, pattern, **kwargs) -> Rule:
    return Rule(id, intent, "keyword", pattern, **kwargs)


def regex_rule(id, intent, pattern, **kwargs) -> Rule:
    return Rule(id, intent, "regex", pattern, **kwargs)


# --- What rule_pattern_check refuses ------------------------------------------------------------------------

CATASTROPHIC = [
    r"(a+)+$",
    r"(a*)*b",
    r"(.*)*x",
    r"(.*,)+x",
    r"(a|aa)*$",
    r"(?:a|a)+$",
    r"(?:a|[a-z])+$",
    r"(\w|\d)+$",
    r"x(.|\s)*y",
    r"(x|a+)+$",
    r"(\s?\w+)+$",
    r"(\w+\s*)*$",
    r"(?:[a-z]+ ?)+$",
    r"(\d{1,3})+$",
    r"(a+a)+$",
    r"^(([a-z])+.)+[A-Z]([a-z])+$",
]
SAFE = [
    r"\bunsubscri(?:be|ption)\b",
    r"^(hi|hello|hey)\b",
    r"how (do|can) i (cancel|unsubscribe)",
    r"(?:news|articles?) about (.+)",
    r"(?:\w+\s+)+\w",
    r"(?:[a-z]+,)+[a-z]",
    r"(a+b+)+",
    r"(?:ab|ac)+",
    r"(?:news|new)+x",
    r"(a|ab)+",
    r"\d{1,3}(\.\d{1,3}){3}",
    r"(\w+\.)+com",
    r"(?>a+)+x",
    r"a++b",
    r"\p{L}+ news",
    r"[|a]+x",
]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_regexes_that_could_backtrack_catastrophically_are_refused(pattern):
    with pytest.raises(ValidationError, match="exponential time"):
        rule_pattern_check(kind="regex", pattern=pattern)


@pytest.mark.parametrize("pattern", SAFE)
def test_ordinary_regexes_pass(pattern):
    rule_pattern_check(kind="regex", pattern=pattern)
    assert backtracking_problem(pattern) is None


@pytest.mark.parametrize(
    "kind, pattern, message",
    [
        ("regex", "", "Give a pattern"),
        ("keyword", "   ", "Give a pattern"),
        ("regex", "(unclosed", "Not a valid regular expression: missing ) at position 9"),
        ("regex", "[a-", "Not a valid regular expression: unterminated character set"),
        ("regex", "*news", "Not a valid regular expression: nothing to repeat at position 0"),
        ("regex", "news|", "match without any text"),
        ("regex", r"\b", "match without any text"),
        ("regex", "(?:hello)?", "match without any text"),
        ("phrase", "hello", "Unknown kind 'phrase'"),
    ],
)
def test_unusable_patterns_are_refused_with_a_reason(kind, pattern, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rule_pattern_check(kind=kind, pattern=pattern)


def test_keywords_are_literal_text():
    for pattern in ["(a+)+", "c++", "what's new?", "新闻", "*"]:
        rule_pattern_check(kind="keyword", pattern=pattern)


def test_deeply_nested_repeats_are_refused_before_compiling():
    # The `regex` module's compiler needs gigabytes for 20 nested (…)+: the check must refuse them first.
    for pattern in ["(" * 150 + "a+" + ")+" * 150, "(" * 20 + "a" + "){1,2}" * 20, "(" * 10 + r"\p{L}(?|a)" + ")" * 10]:
        with pytest.raises(ValidationError, match="nested too deeply"):
            rule_pattern_check(kind="regex", pattern=pattern)
    rule_pattern_check(kind="regex", pattern="(" * 200 + "a" + ")" * 200)  # groups without repeats are cheap
    rule_pattern_check(kind="regex", pattern=r"(?:(?:(?:a+b)+c)+d)+")


# --- Matching -----------------------------------------------------------------------------------------------


def test_keywords_match_whole_words_and_phrases_case_insensitively():
    rules = RuleSet.from_rules(
        [keyword(1, "subscription_account", "cancel my subscription"), keyword(2, "help", "help")]
    )
    assert rules.match("Please CANCEL   my\nsubscription now") == RuleMatch(
        "subscription_account", 1, 7, 31, "CANCEL   my\nsubscription"
    )
    assert rules.match("helpful article") is None  # not a whole word
    assert rules.match("I need help!").intent == "help"
    assert rules.match("self-help") == RuleMatch("help", 2, 5, 9, "help")  # a hyphen is a word boundary


def test_case_sensitive_rules_and_unicode():
    rules = RuleSet.from_rules(
        [
            keyword(1, "search_topic", "AI", case_sensitive=True),
            keyword(2, "search_topic", "STRASSE"),
            keyword(3, "latest_news", "новости"),
            keyword(4, "latest_news", "新闻"),
            keyword(5, "search_topic", "c++"),
        ]
    )
    assert rules.match("news about AI") is not None and rules.match("said the ai") is None
    assert rules.match("die Straße ist gesperrt").text == "Straße"  # full case folding
    assert rules.match("Какие НОВОСТИ сегодня?").rule_id == 3
    assert rules.match("最新 新闻").rule_id == 4
    assert rules.match("learning c++ today").text == "c++"


def test_regex_rules_match_case_insensitively_unless_told():
    rules = RuleSet.from_rules(
        [regex_rule(1, "summarize", r"\btl;?dr\b"), regex_rule(2, "x", r"ABC", case_sensitive=True)]
    )
    assert rules.match("TLDR please") == RuleMatch("summarize", 1, 0, 4, "TLDR")
    assert rules.match("abc") is None and rules.match("ABC").intent == "x"


def test_highest_priority_first_then_lowest_id_and_disabled_rules_skipped():
    rules = RuleSet.from_rules(
        [
            keyword(5, "b", "news"),
            keyword(3, "a", "news"),
            keyword(9, "c", "news", priority=10, enabled=False),
            keyword(7, "d", "latest", priority=5),
        ]
    )
    assert len(rules) == 3
    assert rules.match("latest news").intent == "d"
    assert rules.match("news").intent == "a"


def test_unusable_rules_are_skipped_and_logged(caplog):
    with caplog.at_level(logging.WARNING, logger="personalization.understanding.rules"):
        rules = RuleSet.from_rules(
            [regex_rule(1, "bad", "(unclosed"), regex_rule(2, "slow", r"(a+)+$"), keyword(3, "ok", "a")]
        )
    assert len(rules) == 1 and rules.match("a a a").intent == "ok"
    assert "Keyword rule 1" in caplog.text and "Keyword rule 2" in caplog.text


def test_a_rule_that_runs_out_of_time_is_skipped(caplog):
    # Bounded repeats pass the static check, but four of them in a row take far longer than a rule may.
    slow = "(?:a|a){1,9}" * 4 + "$"
    rule_pattern_check(kind="regex", pattern=slow)
    rules = RuleSet.from_rules([regex_rule(1, "slow", slow, priority=1), regex_rule(2, "fallback", "!")])
    with caplog.at_level(logging.WARNING, logger="personalization.understanding.rules"):
        found = rules.match("a" * 36 + "!")
    assert found == RuleMatch("fallback", 2, 36, 37, "!")
    assert "Keyword rule 1" in caplog.text and "timed out" in caplog.text


BAD_INPUT = [
    "",
    " ",
    "news " * 2000,
    "x" * 10_000,
    "🙂🔥" * 3000,
    "Привет, какие новости? 你好 مرحبا שלום",
    "<script>alert('news')</script>",
    "[link](http://x) **bold** {{ template }} ${var}",
    "\x00\x00news\x00",
    "\ud800 lone surrogate",
    "a" * 5000 + "!",
    None,
    42,
]


@pytest.mark.parametrize("text", BAD_INPUT, ids=range(len(BAD_INPUT)))
def test_matching_never_raises(text):
    rules = RuleSet.from_rules(
        [
            keyword(1, "latest_news", "news"),
            regex_rule(2, "search_topic", r"about (\w+)"),
            regex_rule(3, "slow", "(?:a|a){1,9}" * 4 + "$"),
        ]
    )
    found = rules.match(text)
    assert found is None or isinstance(found, RuleMatch)
    if isinstance(text, str) and "news" in text.lower():
        assert found.intent == "latest_news"
    assert RuleSet.from_rules([]).match(text) is None


def test_fifty_rules_find_the_one_that_matches():
    rules = [keyword(i, f"intent_{i}", f"word{i} phrase") for i in range(40)]
    rules += [regex_rule(100 + i, f"pattern_{i}", rf"\bthing{i}s?\b") for i in range(10)]
    ruleset = RuleSet.from_rules(rules)
    message = ("lorem ipsum dolor sit amet " * 8)[:180] + " many thing9s here"
    assert len(ruleset) == 50
    for _ in range(200):
        assert ruleset.match(message) == RuleMatch("pattern_9", 109, 186, 193, "thing9s")
    assert ruleset.match(message.replace("thing9s", "word39 phrase")).intent == "intent_39"


# --- From the database --------------------------------------------------------------------------------------


def test_rules_load_reads_enabled_rules_of_active_intents(db):
    help_, old = Intent.objects.create(name="help"), Intent.objects.create(name="old", is_active=False)
    KeywordRule.objects.create(intent=help_, pattern="how does this work", priority=1)
    KeywordRule.objects.create(intent=help_, kind="regex", pattern=r"^\?+$")
    KeywordRule.objects.create(intent=help_, pattern="disabled", enabled=False)
    KeywordRule.objects.create(intent=old, pattern="how does this work", priority=9)
    rules = rules_load()
    assert len(rules) == 2
    first = KeywordRule.objects.get(pattern="how does this work", intent=help_)
    assert rules.match("So, how does this work?") == RuleMatch("help", first.pk, 4, 22, "how does this work")
    assert rules.match("???").intent == "help"
    assert rules.match("disabled") is None
