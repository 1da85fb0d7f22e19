"""`text_csv`: texts and labels from a CSV, as token-id sequences for sequence classifiers.

The vocabulary is fitted on the training split only and kept in `DataInfo.source_state`
(`vocab`, `max_len`, `classes`), so `nntrain eval` tokenizes exactly as training did.
"""

from __future__ import annotations

import collections
import re
from typing import Annotated

import torch
from pydantic import Field

from nntrain.data.info import PAD, UNK, DataInfo
from nntrain.data.labels import check_class_count, class_names, csv_labels, encode_labels
from nntrain.data.reading import Delimiter, check_memory, existing_file, read_csv
from nntrain.data.splits import (
    DEFAULT_CONTEXT,
    TEST_SEED,
    Fraction,
    PositiveInt,
    SourceContext,
    Splits,
    holdout,
    permutation,
)
from nntrain.errors import DataError
from nntrain.registries import DATASETS

# Tokenized documents and their labels, row for row.
Texts = tuple[list[list[str]], list[str]]


def tokenize(text: str, pattern: re.Pattern, lowercase: bool) -> list[str]:
    """Words of `text`: lowercased (optionally), then every match of `pattern`."""
    return pattern.findall(text.lower() if lowercase else text)


def build_vocab(docs: list[list[str]], min_freq: int = 1, max_size: int | None = None) -> list[str]:
    """Index -> token: `<pad>`, `<unk>`, then tokens seen `min_freq` times, most frequent first.

    Ties are broken alphabetically so the vocabulary is a function of the documents alone.
    `max_size` counts the two special tokens.
    """
    counts = collections.Counter(tok for doc in docs for tok in doc)
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    if max_size is not None:
        kept = kept[: max(max_size - 2, 0)]
    return ["<pad>", "<unk>", *kept]


def encode(docs: list[list[str]], vocab: list[str], max_len: int) -> torch.Tensor:
    """(N, max_len) int64 ids: truncated to `max_len`, padded at the end with 0 (`<pad>`)."""
    index = {t: i for i, t in enumerate(vocab)}
    out = torch.full((len(docs), max_len), PAD, dtype=torch.long)
    for i, doc in enumerate(docs):
        ids = [index.get(t, UNK) for t in doc[:max_len]]
        out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


@DATASETS.register("text_csv", runtime=("context",))
def text_csv(
    path: str,
    text: str = "text",
    label: str = "label",
    test_path: str | None = None,
    test_split: Fraction = 0.0,
    drop_labels: list[str] = [],  # noqa: B006 - never mutated; a list shows as [] in `nntrain list`
    min_freq: PositiveInt = 1,
    max_size: Annotated[int, Field(ge=3)] | None = None,
    max_len: PositiveInt | None = None,
    lowercase: bool = True,
    pattern: str = r"\w+(?:'\w+)*",
    delimiter: Delimiter = ",",
    *,
    context: SourceContext = DEFAULT_CONTEXT,
) -> Splits:
    """Texts and labels from a CSV: token-id sequences (N, T) for sequence classifiers.

    Texts are lowercased and split into words by the regex `pattern`. The vocabulary comes from
    the training split only (`<pad>` = 0, `<unk>` = 1, tokens seen `min_freq` times, at most
    `max_size` entries); sequences are truncated to `max_len` (default: the longest training
    text) and padded at the end with 0. Rows whose label is in `drop_labels` are skipped. The
    test split is `test_path`, or `test_split` of the rows held out with a fixed seed; the
    validation split (`data.val_split`) is held out with the run's seed before the vocabulary
    is built, so validation words never enter it.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DataError(f"not a valid regular expression ({exc})", key=("data", "dataset", "pattern")) from None
    if text == label:
        raise DataError(
            f"'{label}' is also the text column; a model given its label learns nothing",
            key=("data", "dataset", "label"),
        )

    def load(p: str, key: str) -> Texts:
        table = read_csv(existing_file(p, key), delimiter)
        t_col, l_col = table.index(text, "text"), table.index(label, "label")
        table = table.subset([i for i, r in enumerate(table.rows) if r[l_col].strip() not in drop_labels])
        if not table.rows:
            raise DataError(f"{table.path}: no rows left (drop_labels: {drop_labels})")
        labels = csv_labels(table.strings(l_col), table.lines, label, table.path)
        return [tokenize(r[t_col], regex, lowercase) for r in table.rows], labels

    rows = load(path, "path")
    # The label set is a schema, not a statistic: all rows of `path`.
    classes = check_class_count(class_names(rows[1]), f"{path}: column '{label}'")
    if test_path is not None:
        test = load(test_path, "test_path")
    else:
        rows, test = _hold_out_test(rows, test_split)
    kept, held = holdout(len(rows[0]), context.val_split, context.seed)
    (docs, labels), val = _pick(rows, kept.tolist()), _pick(rows, held.tolist())
    _check_training_texts(docs, val, test is not None, path, text, pattern)
    if context.state is not None:  # nntrain eval: tokenize exactly as in training
        vocab, length, classes = context.state["vocab"], context.state["max_len"], context.state["classes"]
    else:
        vocab = build_vocab(docs, min_freq, max_size)
        length = max_len or max(1, max(len(d) for d in docs))
    texts = len(docs) + len(val[0]) + (len(test[0]) if test is not None else 0)
    check_memory(  # int64 token ids, padded to `length`
        texts * length * 8, f"{texts:,} texts of {length:,} tokens (int64 ids)", ("data", "dataset", "max_len"),
        "lower max_len",
    )
    x, y = encode(docs, vocab, length), encode_labels(labels, classes, path)
    x_val, y_val = encode(val[0], vocab, length), encode_labels(val[1], classes, path)
    x_test = y_test = None
    if test is not None:
        x_test, y_test = encode(test[0], vocab, length), encode_labels(test[1], classes, test_path or path)
    info = DataInfo(
        "classification", (length,), len(classes), classes, vocab_size=len(vocab),
        source_state={
            "vocab": vocab, "max_len": length, "classes": classes,
            "text": text, "lowercase": lowercase, "pattern": pattern,  # how `nntrain predict` tokenizes
        },
        variable_length=True,
    )
    return Splits(x, y, info, x_test, y_test, x_val=x_val, y_val=y_val)


def _pick(rows: Texts, index: list[int]) -> Texts:
    return [rows[0][i] for i in index], [rows[1][i] for i in index]


def _hold_out_test(rows: Texts, fraction: float) -> tuple[Texts, Texts | None]:
    """(the rest, the test split): `fraction` of the rows drawn with TEST_SEED; None if 0."""
    if fraction <= 0:
        return rows, None
    order = permutation(len(rows[0]), TEST_SEED).tolist()
    n_test = max(1, round(fraction * len(order)))
    return _pick(rows, order[n_test:]), _pick(rows, order[:n_test])


def _check_training_texts(
    docs: list[list[str]], val: Texts, has_test: bool, path: str, column: str, pattern: str
) -> None:
    """A DataError if no training row is left, or no training text has a word."""
    if not docs:
        raise DataError(
            f"{path} has {len(val[0])} rows{' besides the test split' if has_test else ''}; "
            f"holding out {len(val[0])} for validation leaves none to train on (lower val_split, or give more data)",
            key=("data", "val_split"),
        )
    if not any(docs):
        raise DataError(
            f"no training text in column '{column}' of {path} has a word that "
            f"data.dataset.pattern '{pattern}' matches; is it the column of texts?",
            key=("data", "dataset", "text"),
        )
