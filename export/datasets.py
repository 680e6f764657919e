"""Real data that ships inside installed packages (DESIGN.md section 7); nothing is downloaded.

- digits: scikit-learn's 1,797 8x8 handwritten digits, read row by row (8 steps x 8 pixels).
- co2: the Mauna Loa CO2 record from statsmodels, resampled to monthly means.
- text: CPython's `pydoc_data.topics`, the Python reference docs, as character ids.

Every split is deterministic: seeded for digits and text, chronological for the series.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DIGITS_PIXEL_MAX = 16.0
UNKNOWN_CHAR = "\ufffd"


@dataclass(frozen=True)
class LabelledSplit:
    """Sequences `x` [n, steps, features] float32 with class ids `y` [n] int64."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]


@dataclass(frozen=True)
class DigitsData:
    """The digits as 8-step sequences of 8 raw pixel values (0..16), split three ways."""

    train: LabelledSplit
    validation: LabelledSplit
    test: LabelledSplit


@dataclass(frozen=True)
class SeriesData:
    """One univariate series, oldest first, split chronologically at two indices."""

    values: npt.NDArray[np.float32]
    months: npt.NDArray[np.datetime64]
    train_end: int
    validation_end: int

    @property
    def train(self) -> npt.NDArray[np.float32]:
        """The oldest segment, the only one the model and the normalisation see."""
        return self.values[: self.train_end]

    @property
    def validation(self) -> npt.NDArray[np.float32]:
        """The segment after train, used to pick the best epoch."""
        return self.values[self.train_end : self.validation_end]

    @property
    def test(self) -> npt.NDArray[np.float32]:
        """The most recent segment, held out for the card's metrics."""
        return self.values[self.validation_end :]


@dataclass(frozen=True)
class TextCorpus:
    """Character ids for three splits; `vocabulary[i]` is the character with id i."""

    vocabulary: tuple[str, ...]
    train: npt.NDArray[np.int64]
    validation: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]

    def encode(self, text: str) -> npt.NDArray[np.int64]:
        """Map characters to ids; characters outside the vocabulary become the unknown id 0."""
        return _encode(text, self.vocabulary)

    def decode(self, ids: npt.ArrayLike) -> str:
        """Map ids back to characters (the unknown id reads as U+FFFD)."""
        return "".join(self.vocabulary[i] for i in np.asarray(ids).ravel())


def load_digits(*, seed: int = 0, validation_size: int = 270, test_size: int = 360) -> DigitsData:
    """Split the digits, stratified by class, into train/validation/test (1167/270/360 by default).

    Each image becomes a sequence of its 8 pixel rows, top to bottom; values stay raw (0..16).
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = bunch.images.astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=validation_size, random_state=seed, stratify=y_rest
    )
    return DigitsData(
        train=LabelledSplit(x_train, y_train),
        validation=LabelledSplit(x_val, y_val),
        test=LabelledSplit(x_test, y_test),
    )


def load_co2(*, validation_months: int = 60, test_months: int = 60) -> SeriesData:
    """Monthly mean CO2 at Mauna Loa (ppm), March 1958 to December 2001: 526 months.

    The weekly record has gaps; monthly means leave five empty months, filled by linear
    interpolation in time. The last `test_months` are the test segment, the
    `validation_months` before them validation, everything older train.
    """
    from statsmodels.datasets import co2

    weekly = co2.load_pandas().data["co2"]
    monthly = weekly.resample("MS").mean().interpolate(method="time")
    values = monthly.to_numpy(dtype=np.float32)
    validation_end = len(values) - test_months
    return SeriesData(
        values=values,
        months=monthly.index.to_numpy(dtype="datetime64[M]"),
        train_end=validation_end - validation_months,
        validation_end=validation_end,
    )


def load_text(
    *, seed: int = 0, block_chars: int = 2048, held_out_fraction: float = 0.05, min_count: int = 10
) -> TextCorpus:
    """The Python reference docs from `pydoc_data.topics` as character ids.

    Topics are joined in key order and cut into `block_chars` blocks; a seeded shuffle
    sends `held_out_fraction` of the blocks to validation, as many to test, the rest to
    train (each split keeps its blocks in corpus order). The vocabulary is id 0 for
    unknown (U+FFFD), then every character seen at least `min_count` times in train,
    by code point, so ids are stable for a given corpus.
    """
    from pydoc_data.topics import topics

    text = "\n".join(topics[key] for key in sorted(topics))
    blocks = [text[i : i + block_chars] for i in range(0, len(text), block_chars)]
    order = np.random.default_rng(seed).permutation(len(blocks))
    held_out = round(len(blocks) * held_out_fraction)
    validation_ids = set(order[:held_out].tolist())
    test_ids = set(order[held_out : 2 * held_out].tolist())

    def join(ids: set[int]) -> str:
        return "".join(block for i, block in enumerate(blocks) if i in ids)

    train_ids = set(range(len(blocks))) - validation_ids - test_ids
    train_text = join(train_ids)
    counts = Counter(train_text)
    vocabulary = (UNKNOWN_CHAR, *sorted(char for char, n in counts.items() if n >= min_count))
    return TextCorpus(
        vocabulary=vocabulary,
        train=_encode(train_text, vocabulary),
        validation=_encode(join(validation_ids), vocabulary),
        test=_encode(join(test_ids), vocabulary),
    )


def _encode(text: str, vocabulary: tuple[str, ...]) -> npt.NDArray[np.int64]:
    index = {char: i for i, char in enumerate(vocabulary)}
    return np.fromiter((index.get(char, 0) for char in text), dtype=np.int64, count=len(text))
