"""Operating-point rules: ``fpr:ALPHA`` (tau from the OUT scores) or ``score:C`` (a fixed tau)."""

from __future__ import annotations

import math
import re

_RULE_RE = re.compile(r"^(fpr|score):(.+)$")


def parse_rule(rule: str) -> tuple[str, float]:
    """Parse an operating-point rule ``fpr:alpha`` or ``score:c``."""
    m = _RULE_RE.match(rule.strip())
    if not m:
        raise ValueError(f"rule {rule!r} is not 'fpr:ALPHA' (e.g. fpr:0.01) or 'score:C' (e.g. score:0)")
    kind, value = m.group(1), m.group(2)
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"rule {rule!r}: {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"rule {rule!r}: the threshold must be a finite number")
    if kind == "fpr" and not 0 < x < 1:
        raise ValueError(f"rule {rule!r}: alpha must lie in (0, 1)")
    return kind, x
