"""Recurrent sequence models (`gru`, `lstm`) for sequence classification, regression and forecasting.

Inputs are real-valued sequences (N, T, F) or token-id sequences (N, T) (DataInfo). Variable
length is read from the padding: trailing rows that are NaN in every feature (real-valued), or
trailing ids equal to `padding_idx` (tokens). Padded batches are packed
(`pack_padded_sequence`), so the recurrent layers never see a padding step: a padded batch
gives each sequence the output it gets alone.

Finding the padding costs a host sync per batch on CUDA, so it is done only for data that may be
padded: `variable_length` comes from the data (DataInfo), False for fixed-length sequences
(forecasting windows, image rows), which then run straight through. Built without the data's
value, a model assumes padding: always correct, only slower.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nntrain.errors import ConfigError
from nntrain.models import MODELS
from nntrain.models.init import apply_init

PositiveInt = Annotated[int, Field(gt=0)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]
Pool = Literal["last", "mean", "max"]
Init = Optional[str | dict[str, Any]]


class SequenceModel(nn.Module):
    """Input layer (embedding or optional projection) -> GRU/LSTM -> pooling over time -> linear head.

    Pooling: `last` is the final hidden state of the last layer (both directions when
    bidirectional: the forward one at each sequence's own last step), `mean`/`max` reduce the
    top layer's outputs over each sequence's valid steps.
    """

    def __init__(
        self,
        cell: type[nn.RNNBase],
        out_features: int,
        input_size: int | None,
        vocab_size: int | None,
        padding_idx: int | None,
        embedding_dim: int,
        input_proj: int | None,
        hidden_size: int,
        num_layers: int,
        bidirectional: bool,
        dropout: float,
        pool: str,
        variable_length: bool = True,
    ):
        super().__init__()
        self.variable_length = variable_length
        self.embedding: nn.Embedding | None = None
        self.input_proj: nn.Linear | None = None
        self.padding_idx = padding_idx
        if vocab_size is not None:
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
            width = embedding_dim
        elif input_proj is not None:
            self.input_proj = nn.Linear(input_size, input_proj)
            width = input_proj
        else:
            width = input_size
        # torch applies `dropout` between stacked layers only; it warns when there is one layer.
        self.rnn = cell(
            width, hidden_size, num_layers, batch_first=True, bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.pool = pool
        self.directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * self.directions, out_features)

    def _inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedded/projected inputs (N, T, D) and each sequence's length (N,); None: all are full length."""
        pad = None
        if self.embedding is not None:
            if self.variable_length:
                pad = x == self.padding_idx if self.padding_idx is not None else torch.zeros_like(x, dtype=torch.bool)
            h = self.embedding(x)
        else:
            h = x
            if self.variable_length:
                pad = x.isnan().all(dim=-1)  # the documented padding: NaN rows at the end
                h = x.masked_fill(pad.unsqueeze(-1), 0.0)
            if self.input_proj is not None:
                h = self.input_proj(h)
        return h, None if pad is None else (~pad).sum(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, lengths = self._inputs(x)
        n, steps = h.shape[:2]
        if lengths is None:
            # Fixed-length data: nothing to pack or mask, so nothing waits for the host.
            out, state = self.rnn(h)
        else:
            # Lengths go to the CPU to decide on packing: one host sync per batch (free on the CPU;
            # on CUDA it stalls the queue once per step, padded batch or not).
            lengths = lengths.clamp_min(1).cpu()
            if bool((lengths < steps).any()):
                packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
                out, state = self.rnn(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)
            else:
                out, state = self.rnn(h)
        if self.pool == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n)
            pooled = h_n[-self.directions :].transpose(0, 1).reshape(n, -1)
        elif lengths is None:
            pooled = out.mean(dim=1) if self.pool == "mean" else out.amax(dim=1)
        else:
            valid = (torch.arange(steps) < lengths.unsqueeze(1)).to(out.device).unsqueeze(-1)
            if self.pool == "mean":
                pooled = (out * valid).sum(dim=1) / lengths.to(out.device, out.dtype).unsqueeze(1)
            else:
                pooled = out.masked_fill(~valid, float("-inf")).amax(dim=1)
        return self.head(self.dropout(pooled))


def _build(
    cell: type[nn.RNNBase],
    name: str,
    input_size: int | None,
    vocab_size: int | None,
    padding_idx: int | None,
    num_classes: int | None,
    output_size: int | None,
    init: Init,
    **kwargs: Any,
) -> nn.Module:
    if (num_classes is None) == (output_size is None):
        raise ConfigError(
            f"'{name}' needs exactly one of num_classes (classification) or output_size "
            f"(regression, forecasting); the data sets the one that applies", key=("model",)
        )
    if vocab_size is None and input_size is None:
        raise ConfigError(
            f"'{name}' needs sequences: (N, T, F) real values (input_size) or (N, T) token ids "
            f"(vocab_size); this data has neither", key=("model",)
        )
    model = SequenceModel(
        cell, num_classes or output_size, input_size, vocab_size, padding_idx, **kwargs
    )
    apply_init(model, init)
    return model


@MODELS.register("gru")
def gru(
    input_size: PositiveInt | None = None,
    vocab_size: PositiveInt | None = None,
    padding_idx: Annotated[int, Field(ge=0)] | None = None,
    num_classes: PositiveInt | None = None,
    output_size: PositiveInt | None = None,
    hidden_size: PositiveInt = 64,
    num_layers: PositiveInt = 1,
    bidirectional: bool = False,
    dropout: Dropout = 0.0,
    embedding_dim: PositiveInt = 64,
    input_proj: PositiveInt | None = None,
    pool: Pool = "last",
    init: Init = None,
    variable_length: bool = True,
) -> nn.Module:
    """GRU over (N, T, F) values or (N, T) token ids (embedding), pooled over time, then a linear head.

    `variable_length` comes from the data: False skips finding and packing the padding (no
    host sync per batch). True, the default without the data's value, handles any padding.
    """
    return _build(
        nn.GRU, "gru", input_size, vocab_size, padding_idx, num_classes, output_size, init,
        embedding_dim=embedding_dim, input_proj=input_proj, hidden_size=hidden_size,
        num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, pool=pool,
        variable_length=variable_length,
    )


@MODELS.register("lstm")
def lstm(
    input_size: PositiveInt | None = None,
    vocab_size: PositiveInt | None = None,
    padding_idx: Annotated[int, Field(ge=0)] | None = None,
    num_classes: PositiveInt | None = None,
    output_size: PositiveInt | None = None,
    hidden_size: PositiveInt = 64,
    num_layers: PositiveInt = 1,
    bidirectional: bool = False,
    dropout: Dropout = 0.0,
    embedding_dim: PositiveInt = 64,
    input_proj: PositiveInt | None = None,
    pool: Pool = "last",
    init: Init = None,
    variable_length: bool = True,
) -> nn.Module:
    """LSTM over (N, T, F) values or (N, T) token ids (embedding), pooled over time, then a linear head.

    `variable_length` comes from the data: False skips finding and packing the padding (no
    host sync per batch). True, the default without the data's value, handles any padding.
    """
    return _build(
        nn.LSTM, "lstm", input_size, vocab_size, padding_idx, num_classes, output_size, init,
        embedding_dim=embedding_dim, input_proj=input_proj, hidden_size=hidden_size,
        num_layers=num_layers, bidirectional=bidirectional, dropout=dropout, pool=pool,
        variable_length=variable_length,
    )
