"""`shelfgraph eval`: held-out splits, ground truth, ranking metrics, baselines and the HTML report.

    ShelfgraphError (distill.errors)
    └── EvaluationError     the evaluation cannot run (unknown dataset, no test queries, a run stopped
                            on pending batch requests)
"""

from distill.errors import ShelfgraphError


class EvaluationError(ShelfgraphError):
    """The evaluation cannot produce numbers; the message says why and what to do."""


__all__ = ["EvaluationError"]
