"""Short reads of one row's out-edges from the packed CSR arrays, as Python lists, without numpy.

A lookup touches ten or twenty edges; numpy costs a microsecond or more per call on slices that short, so
the hot path slices memoryviews over the same (mapped) buffers instead: a slice is a view, `tolist()` one
C call. Owns no ranking rule (`serve.index` does) and copies no array: the views read the mapped pages.
"""

from __future__ import annotations

import numpy as np

from serve.build import Csr


def _view(array: np.ndarray) -> memoryview:
    """A 1-D memoryview of `array` (no copy when it is contiguous, as packed arrays are)."""
    return np.ascontiguousarray(array).data


class ScoreTables:
    """Decoded views of a packed index's table of distinct scores: the mapped float32 table itself, and a
    rounded float64 copy, per worker 8 bytes per distinct score (at most 65,536 of them), not per relation."""

    __slots__ = ("raw", "rounded", "nbytes")

    def __init__(self, table: np.ndarray) -> None:
        self.raw: memoryview[float] = _view(np.asarray(table, dtype=np.float32))  # type: ignore[assignment]
        rounded = np.round(table.astype(np.float64), 6)
        self.rounded: memoryview[float] = _view(rounded)  # type: ignore[assignment]
        self.nbytes = rounded.nbytes


class CsrRows:
    """One relation kind's CSR, read row by row. Scores come back two ways, both exactly what numpy gave
    before: `raw` (the float32 value as a Python float, what the cart sums) and `rounded` (float64 rounded
    to 6 digits, what a neighbour list shows)."""

    __slots__ = ("csr", "_indptr", "_dst", "_codes", "_reason", "_via", "_raw", "_rounded")

    def __init__(self, csr: Csr, tables: ScoreTables | None) -> None:
        """`tables`: of `csr.score_table` (shared by the kinds of one index), None when scores are float32."""
        self.csr = csr
        self._indptr = _view(csr.indptr)
        self._dst = _view(csr.dst)
        self._codes = _view(csr.score)
        self._reason = _view(csr.reason_id)
        self._via = _view(csr.via) if csr.via is not None else None
        self._raw: memoryview[float] | None = tables.raw if tables is not None else None
        self._rounded: memoryview[float] | None = tables.rounded if tables is not None else None

    def bounds(self, row: int) -> tuple[int, int]:
        indptr = self._indptr
        return indptr[row], indptr[row + 1]

    def degree(self, row: int) -> int:
        indptr = self._indptr
        return int(indptr[row + 1] - indptr[row])

    def targets(self, rows: list[int]) -> set[int]:
        """The target rows of all these rows, as a set."""
        out: set[int] = set()
        for row in rows:
            out.update(self.dst(*self.bounds(row)))
        return out

    def dst(self, lo: int, hi: int) -> list[int]:
        return self._dst[lo:hi].tolist()

    def reasons(self, lo: int, hi: int) -> list[int]:
        return self._reason[lo:hi].tolist()

    def via(self, lo: int, hi: int) -> list[int] | None:
        return self._via[lo:hi].tolist() if self._via is not None else None

    def raw_scores(self, lo: int, hi: int) -> list[float]:
        """The stored float32 scores as Python floats (exact)."""
        raw = self._raw
        if raw is None:
            exact: list[float] = self.csr.score[lo:hi].tolist()  # a float32 column: converted exactly
            return exact
        return [raw[c] for c in self._codes[lo:hi].tolist()]

    def rounded_scores(self, lo: int, hi: int) -> list[float]:
        """Scores as shown: float64 of the float32 value, rounded to 6 digits (float32 noise digits off)."""
        rounded = self._rounded
        if rounded is None:
            return round_scores(np.asarray(self.csr.score[lo:hi]))
        return [rounded[c] for c in self._codes[lo:hi].tolist()]


Candidates = list[tuple[str, list[int], list[float], list[int], list[int] | None]]
"""Per cart item: (source, target rows, float32 scores as floats, reason ids, lender rows or None)."""


def sum_by_target(lists: Candidates, banned: set[int]) -> dict[int, float]:
    """Target row -> 0.0 + its scores in list order, over targets not banned (the C twin:
    `serve._fastindex.sum_by_target`, the same sums bit for bit)."""
    totals: dict[int, float] = {}
    total_of = totals.get
    for _, dst, score, _, _ in lists:
        for t, sc in zip(dst, score):
            if t not in banned:
                totals[t] = total_of(t, 0.0) + sc
    return totals


def gather(lists: Candidates, chosen: list[int]) -> dict[int, list[tuple[float, int, int, int]]]:
    """Chosen target row -> its (score, list index, reason id, lender or -1), in list then position order."""
    hits: dict[int, list[tuple[float, int, int, int]]] = {t: [] for t in chosen}
    for i, (_, dst, score, reason, via) in enumerate(lists):
        for j, t in enumerate(dst):
            if t in hits:
                hits[t].append((score[j], i, reason[j], via[j] if via is not None else -1))
    return hits


def round_scores(score: np.ndarray) -> list[float]:
    """What a neighbour list shows for float32 scores computed at lookup time (fallback paths)."""
    rounded: list[float] = np.round(score.astype(np.float64), 6).tolist()
    return rounded
