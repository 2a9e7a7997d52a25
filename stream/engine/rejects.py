"""The share of a run's records that could not be learned, and the alarm when it passes a threshold.

A run that dead-letters most of its records -- a stream of 7 classes read with
``--classes 2``, a producer that changed its schema, the wrong topic -- still
learns the rest and reports an accuracy on it: a plausible, wrong result.
:class:`RejectTracker` counts, for one run, the records read and those that
were not learned because the decoder refused them or they came late (their
reasons in full, so the alarm can say *which* label or field), and judges the
rate against ``EngineConfig.max_dead_letter_rate`` once at least
``min_records`` were read (one bad record at the start must not trip it).

Repeats of an already learned id are not counted: their event *was* learned.
Late events count whatever ``--late-policy`` does with them: dropped or
dead-lettered, they were not learned.

Examples
--------
>>> tracker = RejectTracker(threshold=0.05, min_records=200)
>>> tracker.observe(100, ["bad label: 4 is outside [0, 2)"] * 60)
>>> tracker.newly_exceeded()  # 60% of 100 records: too few records to judge
False
>>> tracker.observe(100, ["bad label: 4 is outside [0, 2)"] * 10 + ["bad json: oops"])
>>> tracker.newly_exceeded()
True
>>> tracker.observe(100, [])
>>> tracker.newly_exceeded()  # the alarm fires once per run
False
>>> verdict = tracker.verdict()
>>> round(verdict.rate, 3), verdict.exceeded, verdict.top_reasons[0]
(0.237, True, ('bad label: 4 is outside [0, 2)', 70))
>>> verdict.describe()
"dead-letter rate 23.7% (71 of 300 records) is above --max-dead-letter-rate 0.05; top reasons: 'bad label: 4 is outside [0, 2)' x 70, 'bad json: oops' x 1"
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

__all__ = ["DeadLetterVerdict", "RejectTracker", "HINT"]

#: What usually causes mass dead-lettering; printed with every alarm.
HINT = "check --classes, the feature schema (--n-features) and --topic; the metrics cover only the rest"
# Reasons are kept in full (they name the label or field); a stream whose
# reasons are all different (offsets in a JSON error) must not grow memory.
_MAX_DISTINCT_REASONS = 64
_MAX_REASON_CHARS = 200
_TOP = 3


@dataclass(frozen=True)
class DeadLetterVerdict:
    """A run's records and rejects against its threshold: plain data for summaries, reports and metrics.

    ``exceeded``: the rate is above ``threshold`` now (judged only from
    ``min_records`` records on); ``alarmed``: it was at some point of the run.
    """

    records: int
    rejected: int
    threshold: float
    min_records: int
    top_reasons: tuple[tuple[str, int], ...] = ()
    alarmed: bool = False

    @property
    def rate(self) -> float:
        return self.rejected / self.records if self.records else 0.0

    @property
    def judged(self) -> bool:
        """Enough records were read for the rate to mean something."""
        return self.records >= self.min_records

    @property
    def exceeded(self) -> bool:
        return self.judged and self.rate > self.threshold

    def describe(self) -> str:
        """One line: the rate, the threshold and the top reasons with their counts."""
        reasons = ", ".join(f"{reason!r} x {count:,}" for reason, count in self.top_reasons) or "none"
        side = "above" if self.exceeded else "within"
        return (
            f"dead-letter rate {self.rate:.1%} ({self.rejected:,} of {self.records:,} records) is {side} "
            f"--max-dead-letter-rate {self.threshold:g}; top reasons: {reasons}"
        )

    def as_dict(self) -> dict:
        """For ``summary.json``: every field and the derived rate and verdict."""
        return {
            "records": self.records,
            "rejected": self.rejected,
            "rate": self.rate,
            "threshold": self.threshold,
            "min_records": self.min_records,
            "exceeded": self.exceeded,
            "alarmed": self.alarmed,
            "top_reasons": [[reason, count] for reason, count in self.top_reasons],
        }


class RejectTracker:
    """Counts one run's records and rejects by reason; see the module docstring.

    ``threshold`` 1.0 never fires (a rate cannot exceed it): the alarm is off.
    """

    def __init__(self, threshold: float = 0.05, min_records: int = 200) -> None:
        self.threshold = threshold
        self.min_records = min_records
        self._records = 0
        self._reasons: Counter[str] = Counter()
        self._alarmed = False

    @property
    def rejected(self) -> int:
        return sum(self._reasons.values())

    def observe(self, records: int, reasons: Iterable[str] = ()) -> None:
        """Count ``records`` read and the reasons of those of them rejected."""
        self._records += records
        for reason in reasons:
            self.add(reason)

    def add(self, reason: str, count: int = 1) -> None:
        """Count ``count`` rejects for ``reason`` (records already counted as read: late events)."""
        reason = reason[:_MAX_REASON_CHARS]
        if reason not in self._reasons and len(self._reasons) >= _MAX_DISTINCT_REASONS:
            # Past the cap a new reason joins its kind's bucket: counts stay exact, memory bounded.
            reason = reason.split(":", 1)[0] + ": (other reasons)"
        self._reasons[reason] += count

    def newly_exceeded(self) -> bool:
        """True the first time the rate is above the threshold in this run (then never again)."""
        if self._alarmed or not self.verdict().exceeded:
            return False
        self._alarmed = True
        return True

    def verdict(self) -> DeadLetterVerdict:
        """The run so far, as plain data."""
        return DeadLetterVerdict(
            records=self._records,
            rejected=self.rejected,
            threshold=self.threshold,
            min_records=self.min_records,
            top_reasons=tuple(self._reasons.most_common(_TOP)),
            alarmed=self._alarmed,
        )
