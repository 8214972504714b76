"""The seeded, stable 80/20 split behind every evaluation (sessions, baskets or products).

An id's side depends only on sha256(f"{seed}:{id}"): the same in every process, machine and Python
version (built-in hash() is salted per process and must never decide a split).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import polars as pl

TEST_SHARE: Final[float] = 0.2
_SCALE: Final[float] = float(2**64)


def unit_hash(key: str, seed: int = 0) -> float:
    """sha256 of "seed:key" mapped to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def is_test(key: str, seed: int = 0, test_share: float = TEST_SHARE) -> bool:
    if not 0.0 < test_share < 1.0:
        raise ValueError(f"test_share must be in (0, 1), got {test_share}")
    return unit_hash(key, seed) < test_share


@dataclass(frozen=True)
class Split:
    """Which ids are held out. `train` and `test` are disjoint and together hold every id given."""

    train: frozenset[str]
    test: frozenset[str]
    seed: int
    test_share: float

    @property
    def size(self) -> int:
        return len(self.train) + len(self.test)


def split_ids(ids: Iterable[str], seed: int = 0, test_share: float = TEST_SHARE) -> Split:
    unique = set(ids)
    test = frozenset(key for key in unique if is_test(key, seed, test_share))
    return Split(train=frozenset(unique - test), test=test, seed=seed, test_share=test_share)


def partition(frame: pl.DataFrame, column: str, split: Split) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(train rows, test rows) of `frame` by the split side of `column`. A value the split does not know
    is an error: silently calling it "train" would leak it."""
    keys = frame[column].cast(pl.String)
    unknown = set(keys.unique().to_list()) - split.train - split.test
    if unknown:
        raise ValueError(f"{len(unknown)} {column} values are not in the split, e.g. {sorted(unknown)[:3]}")
    test_mask = keys.is_in(list(split.test))
    return frame.filter(~test_mask), frame.filter(test_mask)
