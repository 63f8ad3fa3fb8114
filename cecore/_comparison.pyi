# Types of cecore.Comparison (_comparison.py). result() maps each statistic's name
# to a Python float, except "count" (an int).
from typing import Any, SupportsIndex

import numpy.typing as npt

class Comparison:
    axis: int
    ignore_index: int
    shift: bool
    n_threads: SupportsIndex | None
    count: int
    same_top_count: int
    def __init__(
        self, *, axis: SupportsIndex = -1, ignore_index: SupportsIndex = -100,
        shift: bool = False, n_threads: SupportsIndex | None = None,
    ) -> None: ...
    def reset(self) -> None: ...
    def update(
        self, logits: npt.ArrayLike, ref_logits: npt.ArrayLike, target: npt.ArrayLike,
    ) -> None: ...
    def merge(self, other: Comparison) -> Comparison: ...
    def result(self) -> dict[str, float]: ...
    def __getstate__(self) -> dict[str, Any]: ...
    def __setstate__(self, state: dict[str, Any]) -> None: ...
