"""A static check for regular expressions that could backtrack catastrophically (ReDoS).

The pattern is parsed with Python's own regex parser and its tree searched for a repeat (allowing many
iterations) whose body can match the same text in more than one way: a repeat inside it, as in (a+)+,
(.*,)+ or (\\d{1,3})+, or alternatives that can match alike, as in (a|aa)* or (a|[a-z])+. An ambiguous part
is harmless when every iteration must also match something it cannot, as in (\\w+\\s)+. The check is
conservative where unsure; editors' rules also run with a timeout, which bounds what it lets through.
"""

import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from re import _constants as sre
from re import _parser as sre_parse

RISKY_REPEAT = 10  # a repeat allowing this many iterations or more can blow up when its body is ambiguous
# Repeats nested deeper than this are refused: the `regex` module's compiler takes time and memory
# exponential in the depth (20 levels of (…)+ take gigabytes), and no rule needs them.
MAX_REPEAT_DEPTH = 6
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT}  # POSSESSIVE_REPEAT never gives back what it took
_LEAVES = {sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN}
_CATEGORIES = {sre.CATEGORY_DIGIT: "digit", sre.CATEGORY_WORD: "word", sre.CATEGORY_SPACE: "space"}
_CATEGORY_RE = {"digit": re.compile(r"\d"), "word": re.compile(r"\w"), "space": re.compile(r"\s")}
# Syntax of the `regex` module that Python's parser lacks, replaced by a class of the same breadth.
_REGEX_ONLY = re.compile(r"\\[pP](?:\{[^}]*\}|[A-Za-z])|\\X")
# Python's parser merges alternatives ("a|a" becomes [a], "ab|ac" becomes a[bc]); the `regex` module does not
# always, so a marker after each "|" keeps them apart, and `_normalize` then factors out common prefixes only.
_MARK_CHAR = 0x10FFFD
_MARK = "(?!\\U0010fffd)"
_MARK_BODY = [(sre.LITERAL, _MARK_CHAR)]


@dataclass(frozen=True)
class _Chars:
    """The characters a part of a pattern can match: any, or ranges of code points and categories."""

    any: bool = False
    ranges: frozenset[tuple[int, int]] = frozenset()
    categories: frozenset[str] = frozenset()

    def __or__(self, other: "_Chars") -> "_Chars":
        return _Chars(self.any or other.any, self.ranges | other.ranges, self.categories | other.categories)

    def empty(self) -> bool:
        return not (self.any or self.ranges or self.categories)

    def overlaps(self, other: "_Chars") -> bool:
        if self.empty() or other.empty():
            return False
        if self.any or other.any:
            return True
        if any(a == b or {a, b} == {"digit", "word"} for a in self.categories for b in other.categories):
            return True
        if any(lo1 <= hi2 and lo2 <= hi1 for lo1, hi1 in self.ranges for lo2, hi2 in other.ranges):
            return True
        pairs = [(r, c) for r in self.ranges for c in other.categories]
        pairs += [(r, c) for r in other.ranges for c in self.categories]
        return any(_range_in_category(r, c) for r, c in pairs)


NOTHING, EVERYTHING = _Chars(), _Chars(any=True)


def _range_in_category(span: tuple[int, int], category: str) -> bool:
    lo, hi = span
    return hi - lo > 512 or any(_CATEGORY_RE[category].match(chr(code)) for code in range(lo, hi + 1))


def _span(lo: int, hi: int) -> _Chars:
    # Rules usually match case-insensitively: count both cases.
    spans = {(lo, hi)}
    for convert in (str.lower, str.upper):
        a, b = convert(chr(lo)), convert(chr(hi))
        if len(a) == len(b) == 1 and ord(a) <= ord(b):
            spans.add((ord(a), ord(b)))
    return _Chars(ranges=frozenset(spans))


def _leaf_chars(op, av) -> _Chars:
    if op is sre.LITERAL:
        return _span(av, av)
    if op is not sre.IN:
        return EVERYTHING
    chars = NOTHING
    for item_op, item_av in av:
        if item_op is sre.LITERAL:
            chars |= _span(item_av, item_av)
        elif item_op is sre.RANGE:
            chars |= _span(*item_av)
        elif item_op is sre.CATEGORY and item_av in _CATEGORIES:
            chars |= _Chars(categories=frozenset([_CATEGORIES[item_av]]))
        else:  # a negated set or category
            return EVERYTHING
    return chars


def _min_width(items) -> int:
    total = 0
    for op, av in items:
        if op in _LEAVES:
            total += 1
        elif op is sre.SUBPATTERN:
            total += _min_width(av[-1])
        elif op is sre.ATOMIC_GROUP:
            total += _min_width(av)
        elif op is sre.BRANCH:
            total += min(_min_width(alt) for alt in av[1])
        elif op in _REPEATS or op is sre.POSSESSIVE_REPEAT:
            total += av[0] * _min_width(av[2])
    return total


def _chars(items, *, first: bool) -> _Chars:
    """What `items` can match anywhere, or (`first`) as their first character."""
    chars = NOTHING
    for op, av in items:
        if op in _LEAVES:
            part = _leaf_chars(op, av)
        elif op is sre.SUBPATTERN:
            part = _chars(av[-1], first=first)
        elif op is sre.ATOMIC_GROUP:
            part = _chars(av, first=first)
        elif op is sre.BRANCH:
            part = NOTHING
            for alt in av[1]:
                part |= _chars(alt, first=first)
        elif op in _REPEATS or op is sre.POSSESSIVE_REPEAT:
            part = _chars(av[2], first=first) if av[1] else NOTHING
        elif op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
            part = EVERYTHING
        else:  # anchors and lookarounds match no characters
            part = NOTHING
        chars |= part
        if first and _min_width([(op, av)]) > 0:
            break
    return chars


def _set_end(pattern: str, start: int) -> int:
    """The index after the set opening at `start` ("]" first, after any "^", is a literal)."""
    j = start + 1
    j += pattern[j : j + 1] == "^"
    j += pattern[j : j + 1] == "]"
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _mark_alternatives(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i : i + 2])
            i += 2
        elif ch == "[":  # "|" in a set is a literal
            end = _set_end(pattern, i)
            out.append(pattern[i:end])
            i = end
        else:
            out.append(ch + _MARK if ch == "|" else ch)
            i += 1
    return "".join(out)


def _normalize(items) -> list:
    """The tree as lists, without markers, common prefixes of alternatives moved in front of the branch."""
    out = []
    for op, av in items:
        if op is sre.ASSERT_NOT and av[0] == 1 and list(av[1]) == _MARK_BODY:
            continue
        if op is sre.BRANCH:
            alts = [_normalize(alt) for alt in av[1]]
            while all(alts) and all(alt[0] == alts[0][0] for alt in alts):
                out.append(alts[0][0])
                alts = [alt[1:] for alt in alts]
            out.append((op, (None, alts)))
        elif op is sre.SUBPATTERN:
            out.append((op, (*av[:-1], _normalize(av[-1]))))
        elif op in _REPEATS or op is sre.POSSESSIVE_REPEAT:
            out.append((op, (av[0], av[1], _normalize(av[2]))))
        elif op is sre.ATOMIC_GROUP:
            out.append((op, _normalize(av)))
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            out.append((op, (av[0], _normalize(av[1]))))
        elif op is sre.LITERAL and len(chr(av).lower()) == 1:
            out.append((op, ord(chr(av).lower())))  # the check is case-insensitive throughout
        else:
            out.append((op, av))
    return out


def _flatten(items) -> list:
    """`items` with groups opened up: a group in a sequence is its own sequence."""
    flat = []
    for op, av in items:
        flat += _flatten(av[-1]) if op is sre.SUBPATTERN else [(op, av)]
    return flat


NESTED = "a repeat inside a repeat, such as (a+)+ or (.*,)*"
ALIKE = "alternatives that can match the same text inside a repeat, such as (a|aa)* or (a|[a-z])+"


def _ambiguous(items) -> Iterator[tuple[tuple, str, bool]]:
    """(part, why, always) for parts of `items` that can match a text in more than one way. `always`: even
    when each iteration of the repeat around them is pinned down by something they cannot match."""
    for op, av in items:
        if op in _REPEATS:
            if av[1] > av[0]:
                yield (op, av), NESTED, False
            yield from _ambiguous(av[2])
        elif op is sre.SUBPATTERN:
            yield from _ambiguous(av[-1])
        elif op is sre.BRANCH:
            alts = av[1]
            empty = sum(_min_width(alt) == 0 for alt in alts)
            starts = [_chars(alt, first=True) for alt in alts]
            if empty > 1 or any(a.overlaps(b) for i, a in enumerate(starts) for b in starts[i + 1 :]):
                yield (op, av), ALIKE, True
            elif empty:
                yield (op, av), ALIKE, False
            for alt in alts:
                yield from _ambiguous(alt)


def _problem(items) -> str | None:
    for op, av in items:
        if op in _REPEATS and (av[1] == sre.MAXREPEAT or av[1] >= RISKY_REPEAT):
            body = _flatten(av[2])
            for index, item in enumerate(body):
                for part, why, always in _ambiguous([item]):
                    chars = _chars([part], first=False)
                    others = body[:index] + body[index + 1 :]
                    pinned = any(_min_width([o]) and not _chars([o], first=True).overlaps(chars) for o in others)
                    if always or not pinned:
                        return why
        if op in _REPEATS or op is sre.POSSESSIVE_REPEAT:
            nested = [av[2]]
        elif op is sre.BRANCH:
            nested = av[1]
        elif op is sre.SUBPATTERN:
            nested = [av[-1]]
        elif op is sre.ATOMIC_GROUP:
            nested = [av]
        else:
            nested = []
        for sub in nested:
            problem = _problem(sub)
            if problem:
                return problem
    return None


def _repeat_depth(items) -> int:
    deepest = 0
    for op, av in items:
        if op in _REPEATS or op is sre.POSSESSIVE_REPEAT:
            deepest = max(deepest, 1 + _repeat_depth(av[2]))
        elif op is sre.BRANCH:
            deepest = max([deepest, *(_repeat_depth(alt) for alt in av[1])])
        elif op is sre.SUBPATTERN:
            deepest = max(deepest, _repeat_depth(av[-1]))
        elif op is sre.ATOMIC_GROUP:
            deepest = max(deepest, _repeat_depth(av))
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            deepest = max(deepest, _repeat_depth(av[1]))
    return deepest


def _group_depth(pattern: str) -> int:
    """How deeply parentheses nest in `pattern`, for patterns Python's parser cannot read."""
    depth = deepest = i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "[":
            i = _set_end(pattern, i)
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
        i += 2 if ch == "\\" else 1
    return deepest


def _parse(pattern: str) -> list | None:
    """The normalized tree, or None for syntax Python's parser does not know."""
    plain = _REGEX_ONLY.sub(r"\\w", pattern)
    for candidate in (_mark_alternatives(plain), plain):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "possible nested set" and the like
                return _normalize(sre_parse.parse(candidate).data)
        except (re.error, RecursionError, OverflowError, ValueError):
            continue
    return None


def backtracking_problem(pattern: str) -> str | None:
    """Why `pattern` could backtrack catastrophically (a phrase such as "a repeat inside a repeat, …"), or None
    when the check finds nothing or cannot read the pattern (syntax only the `regex` module knows)."""
    too_deep = f"repeats or groups nested too deeply (at most {MAX_REPEAT_DEPTH} levels)"
    try:
        tree = _parse(pattern)
        if tree is None:
            return too_deep if _group_depth(pattern) > MAX_REPEAT_DEPTH else None
        return too_deep if _repeat_depth(tree) > MAX_REPEAT_DEPTH else _problem(tree)
    except RecursionError:
        return too_deep


def matches_empty(pattern: str) -> bool:
    """Whether `pattern` can match without consuming any character (False when it cannot be read)."""
    try:
        tree = _parse(pattern)
        return tree is not None and _min_width(tree) == 0
    except RecursionError:
        return False
