"""The ranker's labelled rows, gathered fold by fold into compact arrays: one float32 matrix (what LightGBM
reads) with the group, label and validation fold of every row. Only groups with an answer in the pool are kept:
a group the pool missed teaches nothing and scores zero whatever the ranker does, so it is only counted (per
validation fold), and the metrics still divide by it. Each fold is sorted and reduced as it arrives, so no
catalog-wide frame of every fold exists. Pure numpy/polars; no fitting here (see stages.rank.model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from distill.stages.rank.context import F32
from distill.stages.rank.features import FEATURES, matrix
from distill.stages.rank.labels import VALID_FOLDS


@dataclass
class TrainingSet:
    """Candidate rows of the answered label groups (one group = one item of one label basket), in (g, t) order.
    `vfold[i]`: the validation fold of row i's group (constant within a group). `missed[k]`: groups of fold k
    with candidate rows but no answer among them."""

    x: F32
    groups: npt.NDArray[np.int64]
    labels: F32
    vfold: npt.NDArray[np.int8]
    missed: npt.NDArray[np.int64]
    answered_groups: int
    positives: int
    """Positive rows."""

    @property
    def height(self) -> int:
        return len(self.groups)

    def frame(self, rows: npt.NDArray[np.bool_] | None = None) -> pl.DataFrame:
        """The feature columns (NaN where evidence is missing) of `rows`, for the single-evidence orderings."""
        x = self.x if rows is None else self.x[rows]
        return pl.DataFrame({name: x[:, i] for i, name in enumerate(FEATURES)})


@dataclass
class TrainingSetBuilder:
    """Accumulates folds (each: rows of its own group ids, (g, s, t, FEATURES..., vfold, label)); `build()`
    copies them into one preallocated matrix, freeing each fold's part as it is copied."""

    _x: list[F32] = field(default_factory=list)
    _groups: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _labels: list[F32] = field(default_factory=list)
    _vfold: list[npt.NDArray[np.int8]] = field(default_factory=list)
    _missed: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(VALID_FOLDS, dtype=np.int64))
    _answered: int = 0
    _positives: int = 0

    def add(self, part: pl.DataFrame) -> None:
        part = part.sort("g", "t")
        per_group = part.group_by("g").agg(pl.col("label").max(), pl.col("vfold").first())
        answered = per_group.filter(pl.col("label") > 0)
        missed = per_group.filter(pl.col("label") <= 0)["vfold"].to_numpy()
        self._missed += np.bincount(missed.astype(np.int64), minlength=VALID_FOLDS)[:VALID_FOLDS]
        self._answered += answered.height
        self._positives += int(part["label"].sum())
        taught = part.filter(pl.col("g").is_in(answered["g"].implode()))
        del part
        self._x.append(matrix(taught))
        self._groups.append(taught["g"].to_numpy().astype(np.int64))
        self._labels.append(taught["label"].to_numpy().astype(np.float32))
        self._vfold.append(taught["vfold"].to_numpy().astype(np.int8))

    def build(self) -> TrainingSet:
        rows = sum(len(g) for g in self._groups)
        x = np.empty((rows, len(FEATURES)), dtype=np.float32)
        start = 0
        while self._x:
            part = self._x.pop(0)
            x[start:start + len(part)] = part
            start += len(part)
            del part

        def joined(parts: list[npt.NDArray], dtype: type) -> npt.NDArray:
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        groups, labels = joined(self._groups, np.int64), joined(self._labels, np.float32)
        vfold = joined(self._vfold, np.int8)
        self._groups, self._labels, self._vfold = [], [], []
        return TrainingSet(x, groups, labels, vfold, self._missed.copy(), self._answered, self._positives)
