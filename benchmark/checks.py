"""Range rules for settings, declared next to each setting (config dataclasses, proxies, training protocols).

A rule is a small object with `problem(value) -> str | None`: None when the value is valid, else the phrase that
completes "<key> is <value>; it must be …" (the fix). The loaders put the file, line and key in front, so every
bad setting ends in one line before any work starts. No torch here: the CLI imports this to build its parser.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Rule:
    test: Callable[[Any], bool]  # True when the value is valid
    wants: str  # what a valid value is, as the fix: "an integer ≥ 1"

    def problem(self, value) -> str | None:
        try:
            ok = self.test(value)
        except (TypeError, ValueError, re.error):
            ok = False
        return None if ok else f"is {value!r}; it must be {self.wants}"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(lo, hi, lo_open, hi_open) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '≥'} {lo:g}"
    if hi is not None:
        return f"{'<' if hi_open else '≤'} {hi:g}"
    return ""


def _within(v, lo, hi, lo_open, hi_open) -> bool:
    if lo is not None and (v <= lo if lo_open else v < lo):
        return False
    return hi is None or (v < hi if hi_open else v <= hi)


def integer(lo=None, hi=None, why: str = "") -> Rule:
    """An int (not a bool) in [lo, hi]."""
    return Rule(lambda v: _is_int(v) and _within(v, lo, hi, False, False),
                f"an integer {_bounds(lo, hi, False, False)}".rstrip() + why)


def number(lo=None, hi=None, lo_open=False, hi_open=False, why: str = "") -> Rule:
    """A finite int or float within the bounds (open or closed at each end)."""
    return Rule(lambda v: _is_num(v) and _within(v, lo, hi, lo_open, hi_open),
                f"a number {_bounds(lo, hi, lo_open, hi_open)}".rstrip() + why)


def positive(why: str = "") -> Rule:
    return number(0, lo_open=True, why=why)


def one_of(*names: str) -> Rule:
    return Rule(lambda v: v in names, "one of " + ", ".join(names))


BOOLEAN = Rule(lambda v: isinstance(v, bool), "true or false")
STRING = Rule(lambda v: isinstance(v, str), "a string")
REGEX = Rule(lambda v: isinstance(v, str) and re.compile(v) is not None, "a valid regular expression")

# Model and dataset names become folders of every record path (<out>/<dataset>/<model>/...), feature keys and
# report file names: a name is an identifier, never a path (no separators, no '.'/'..', no absolute path).
NAME_MAX = 100
NAME_PATTERN = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]{0,%d}" % (NAME_MAX - 1))
NAME = Rule(lambda v: isinstance(v, str) and NAME_PATTERN.fullmatch(v) is not None,
            f"letters, digits and _ - . + only, not starting with a dot, at most {NAME_MAX} characters "
            f"(a name, not a path)")


def suggested_name(value) -> str:
    """A valid name close to an invalid one, for the fix in the error message."""
    out = re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(value)).lstrip("._")[:NAME_MAX]
    return out or "name1"


def optional(rule: Rule, empty: str = "empty") -> Rule:
    """None (the YAML key left empty) or a value the rule accepts."""
    sep = ", or " if "each" in rule.wants or rule.wants.startswith("one of") else " or "
    return Rule(lambda v: v is None or rule.test(v), f"{rule.wants}{sep}{empty}")


def list_of(rule: Rule, min_len: int = 1, length: int | None = None, unique: bool = False) -> Rule:
    """A list whose every item the rule accepts: non-empty (min_len), of a fixed length, duplicate-free."""
    def test(v):
        if not isinstance(v, list) or len(v) < min_len or (length is not None and len(v) != length):
            return False
        if unique and len({repr(x) for x in v}) != len(v):
            return False
        return all(rule.test(x) for x in v)
    if length is not None:
        what = f"a list of {length} values, each {rule.wants}"
    else:
        what = f"{'a non-empty' if min_len else 'a'} list, each item {rule.wants}"
    return Rule(test, what + (", without duplicates" if unique else ""))


def mapping_of(key: Rule, value: Rule) -> Rule:
    return Rule(lambda v: isinstance(v, dict) and all(key.test(k) and value.test(x) for k, x in v.items()),
                f"a mapping of {key.wants} to {value.wants}")


def pair_of(first: Rule, second: Rule) -> Rule:
    return Rule(lambda v: isinstance(v, list) and len(v) == 2 and first.test(v[0]) and second.test(v[1]),
                f"a [{first.wants}, {second.wants}] pair")


def inferred(default) -> Rule | None:
    """A type rule from a default value, for flags and names that have no range (bools, strings)."""
    if isinstance(default, bool):
        return BOOLEAN
    if isinstance(default, str):
        return STRING
    return None


def swept(rule: Rule) -> Rule:
    """A training hyperparameter: one value, or a non-empty duplicate-free list of values to sweep."""
    each = list_of(rule, unique=True)
    return Rule(lambda v: each.test(v) if isinstance(v, list) else rule.test(v),
                f"{rule.wants}, or a non-empty list of such values without duplicates (a sweep)")


def first_problem(values: dict, rules: dict, defaults: Callable[[str], Any] | None = None):
    """(key, problem) of the first value its rule rejects, or None; keys without a rule pass."""
    for key, value in values.items():
        rule = rules.get(key)
        if rule is None and defaults is not None:
            rule = inferred(defaults(key))
        if rule is not None:
            problem = rule.problem(value)
            if problem:
                return key, problem
    return None
