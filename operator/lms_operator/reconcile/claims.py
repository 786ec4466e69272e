"""Remember a bound repository claim for a while instead of reading it on every pass.

Claims rarely change, and every trigger (child events, the sweep) re-read the
claim: one GET per pass. A bound claim is trusted for CLAIM_TTL seconds; a
missing or lost one is never remembered, so it is read again on every pass
until it is fixed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lms_operator.api import status as st

CLAIM_TTL = 300.0


@dataclass
class ClaimCache:
    """RepositoryReady conditions by (namespace, claim), with the time they were read."""
    ttl: float = CLAIM_TTL
    entries: dict[tuple[str, str], tuple[st.Condition, float]] = field(default_factory=dict)

    def fresh(self, namespace: str, claim: str, now: float) -> st.Condition | None:
        """The remembered condition when it is still within the TTL, else None."""
        found = self.entries.get((namespace, claim))
        if found is None or now - found[1] > self.ttl:
            return None
        return found[0]

    def record(self, namespace: str, claim: str, condition: st.Condition, now: float) -> None:
        """Remember a ready claim; forget the claim when it is not ready."""
        if condition.status is True:
            self.entries[(namespace, claim)] = (condition, now)
        else:
            self.entries.pop((namespace, claim), None)
