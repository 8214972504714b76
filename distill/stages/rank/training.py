"""The ranker's labelled rows, gathered fold by fold into compact arrays: the training part as one float32
matrix (what LightGBM reads), the held-back part as a frame (the single-evidence orderings read its columns,
nulls intact). Each fold is sorted and split as it arrives, so no catalog-wide frame of every fold exists.
Pure numpy/polars; no fitting here (see stages.rank.model).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import polars as pl

from distill.stages.rank.context import F32
from distill.stages.rank.features import FEATURES, matrix


@dataclass
class TrainingSet:
    """Candidate rows of the label groups (one group = one item of one label basket), in (g, t) order.
    `x`, `groups`, `labels`: the rows the model is fitted on (non-held-back groups with an answer in the pool;
    groups the pool missed teach nothing). `valid`: the held-back rows (g, s, t, FEATURES..., valid, label)."""

    x: F32
    groups: npt.NDArray[np.int64]
    labels: F32
    valid: pl.DataFrame
    train_groups: int
    valid_groups: int
    positives: int
    """Positive rows over both parts."""

    @property
    def height(self) -> int:
        return len(self.groups) + self.valid.height


@dataclass
class TrainingSetBuilder:
    """Accumulates folds (each: rows of its own group ids, (g, s, t, FEATURES..., valid, label)); `build()`
    copies the training parts into one preallocated matrix, freeing each fold's part as it is copied."""

    _x: list[F32] = field(default_factory=list)
    _groups: list[npt.NDArray[np.int64]] = field(default_factory=list)
    _labels: list[F32] = field(default_factory=list)
    _valid: list[pl.DataFrame] = field(default_factory=list)
    _train_groups: int = 0
    _valid_groups: int = 0
    _positives: int = 0

    def add(self, part: pl.DataFrame) -> None:
        part = part.sort("g", "t")
        answered = part.group_by("g").agg(pl.col("label").max(), pl.col("valid").first()).filter(pl.col("label") > 0)
        held = int(answered["valid"].sum())
        self._valid_groups += held
        self._train_groups += answered.height - held
        self._positives += int(part["label"].sum())
        self._valid.append(part.filter(pl.col("valid")))
        taught = np.isin(part["g"].to_numpy(), answered.filter(~pl.col("valid"))["g"].to_numpy())
        train = part.filter(pl.Series(~part["valid"].to_numpy() & taught))
        del part
        self._x.append(matrix(train))
        self._groups.append(train["g"].to_numpy().astype(np.int64))
        self._labels.append(train["label"].to_numpy().astype(np.float32))

    def build(self) -> TrainingSet:
        rows = sum(len(g) for g in self._groups)
        x = np.empty((rows, len(FEATURES)), dtype=np.float32)
        start = 0
        while self._x:
            part = self._x.pop(0)
            x[start:start + len(part)] = part
            start += len(part)
            del part
        empty = pl.DataFrame(schema={"g": pl.Int64, "s": pl.Int32, "t": pl.Int32, "valid": pl.Boolean,
                                     **{name: pl.Float32 for name in FEATURES}, "label": pl.Float32})
        valid = pl.concat(self._valid) if self._valid else empty
        groups = np.concatenate(self._groups) if self._groups else np.zeros(0, dtype=np.int64)
        labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.float32)
        self._valid, self._groups, self._labels = [], [], []
        return TrainingSet(x, groups, labels, valid, self._train_groups, self._valid_groups, self._positives)
