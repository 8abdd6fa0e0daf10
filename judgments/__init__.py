"""Merchandisers' verdicts on results (thumbs up / down), kept in SQLite, scored per index."""

from judgments.store import Judgment, JudgmentStore, JudgmentsUnavailable

__all__ = ["Judgment", "JudgmentStore", "JudgmentsUnavailable"]
