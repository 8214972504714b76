"""Which pairs the judge sees. A judgement is paid per pair, so only pairs that can reach a served list are
sent: per source product, the best `judge_depth(cap)` candidates of each kind by the ordering that decides
what is served, computed without the judge.

- Complements are served by the rank stage (`distill.stages.rank`): the same ranker, fitted on the same run's
  interactions and scoring the same candidate pool, with the judge's score missing (NaN, which the model
  routes natively; without interactions, the model-free ordering the rank stage uses). Its top pairs may
  come from generators the pipeline's candidate pool does not hold; they are judged as candidates of origin
  `ranker`, and their judgement enters the rank stage like any other.
- Substitutes are served by the formula of `distill.stages.scoring`: its score without the judge (`prescore`).

The margin beyond the cap is half the cap again (`MARGIN_SHARE`): the judge's score is one feature among
many, so it reorders a list locally; a candidate far below the cut would need the judge to outweigh every
other piece of evidence. It is a share of the setting, not a count fitted to a dataset.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from distill.candidates.model import Candidate
from distill.stages.verify import shortlist
from graph_schema.models import Relation

MARGIN_SHARE: Final = 0.5
RANKER_ORIGIN: Final = "ranker"


def judge_depth(cap: int) -> int:
    """Candidates judged per source and kind: the served cap plus half of it (rounded up)."""
    return cap + math.ceil(cap * MARGIN_SHARE)


@dataclass(frozen=True)
class VerifyPlan:
    to_judge: list[Candidate]
    """The pairs to send, complements in the ranker's order per source, then substitutes."""
    added: list[Candidate]
    """Complements the ranker reached that the pipeline's pool did not hold (also in `to_judge`)."""


def plan_verification(
    pool: Sequence[Candidate], reachable: Sequence[Relation], *, prescore: Callable[[Candidate], float],
    max_substitutes: int, leaf: Mapping[str, str | None], targets: Collection[str],
) -> VerifyPlan:
    """`reachable`: the complements the rank stage would serve with `max_complements = judge_depth(cap)` and
    no judgement (its output for exactly that question). Only sources in `targets` are planned."""
    by_key = {c.key: c for c in pool}
    to_judge: list[Candidate] = []
    added: list[Candidate] = []
    for relation in reachable:
        if relation.kind != "complement" or relation.source not in targets:
            continue
        key = (relation.source, relation.target, "complement")
        found = by_key.get(key)
        if found is None:
            source_leaf = leaf.get(relation.source)
            found = Candidate(source=relation.source, target=relation.target, kind="complement",
                              origins=(RANKER_ORIGIN,),
                              same_leaf=source_leaf is not None and source_leaf == leaf.get(relation.target))
            by_key[key] = found
            added.append(found)
        if found.near_duplicate:
            continue  # the same item listed twice is never served as a complement
        to_judge.append(found)
    substitutes = [c for c in pool if c.kind == "substitute" and c.source in targets]
    to_judge += shortlist(substitutes, prescore, per_source={"substitute": judge_depth(max_substitutes)})
    return VerifyPlan(to_judge=to_judge, added=added)
