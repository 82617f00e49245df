"""Transformer models: TransformerClassifier (encoder + pooled head), TransformerLM (decoder-only
causal language model) and Seq2SeqTransformer (encoder-decoder with greedy decoding), built on
bigkern.nn's TransformerEncoder / Transformer (attention by bigkern.ops.attention). Inputs are
batch-first token ids."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

import bigkern.nn as bnn


class PositionalEncoding(nn.Module):
    """Sinusoidal position encodings added to the (N, T, d_model) input, then dropout. The table is
    a non-persistent buffer, so it is not in the state_dict."""

    def __init__(self, d_model: int, max_len: int = 2048, dropout: float = 0.0) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
        self.register_buffer("table", table, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.table.shape[0]} of the positional encoding")
        return self.dropout(x + self.table[: x.shape[1]].to(x.dtype))


class _TokenEmbedding(nn.Module):
    """Token embedding scaled by sqrt(d_model), plus position encodings."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int, dropout: float, padding_idx: int | None) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model, padding_idx=padding_idx)
        # std d_model^-1/2, so the sqrt(d_model) scaling gives unit-variance tokens: with torch's
        # default N(0, 1) they would be sqrt(d_model) times larger than the position encodings,
        # which then barely register (a character LM stalled at bigram level that way)
        nn.init.normal_(self.tokens.weight, std=d_model**-0.5)
        if padding_idx is not None:
            with torch.no_grad():
                self.tokens.weight[padding_idx].zero_()
        self.positions = PositionalEncoding(d_model, max_len, dropout)
        self.scale = math.sqrt(d_model)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.positions(self.tokens(tokens) * self.scale)


def causal_mask(length: int, device: torch.device | None = None) -> torch.Tensor:
    """(length, length) bool mask, True above the diagonal (a position may not attend to later ones);
    boolean like the padding masks, so torch does not convert one of them."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


def _encoder(d_model: int, nhead: int, num_layers: int, dim_feedforward: int, dropout: float) -> bnn.TransformerEncoder:
    layer = bnn.TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True)
    return bnn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)


class TransformerClassifier(nn.Module):
    """Token ids (N, T) -> class logits: embedding + positions, a pre-norm encoder stack, the mean
    of the non-padding positions, a linear head. Positions holding ``pad_idx`` are masked out."""

    def __init__(self, vocab_size: int, num_classes: int, d_model: int = 128, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 256, dropout: float = 0.1, max_len: int = 512, pad_idx: int | None = 0) -> None:  # fmt: skip
        super().__init__()
        self.pad_idx = pad_idx
        self.embed = _TokenEmbedding(vocab_size, d_model, max_len, dropout, pad_idx)
        self.encoder = _encoder(d_model, nhead, num_layers, dim_feedforward, dropout)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        padding = None if self.pad_idx is None else tokens == self.pad_idx
        x = self.encoder(self.embed(tokens), src_key_padding_mask=padding)
        if padding is None:
            return self.head(x.mean(dim=1))
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        return self.head((x * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0))


class TransformerLM(nn.Module):
    """Decoder-only causal language model: embedding + positions, N encoder layers under a causal
    mask (the attention kernel's causal mode; no mask tensor is built), final norm, linear head.

    forward(tokens (N, T)) -> logits (N, T, vocab); ``generate`` samples a continuation.
    """

    def __init__(self, vocab_size: int, d_model: int = 128, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int = 512, dropout: float = 0.1, max_len: int = 1024) -> None:  # fmt: skip
        super().__init__()
        self.max_len = max_len
        self.embed = _TokenEmbedding(vocab_size, d_model, max_len, dropout, None)
        self.encoder = _encoder(d_model, nhead, num_layers, dim_feedforward, dropout)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = causal_mask(tokens.shape[1], tokens.device)
        return self.head(self.encoder(self.embed(tokens), mask=mask, is_causal=True))

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, length: int, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Continue ``prompt`` (N, T0) by ``length`` tokens (argmax when temperature == 0),
        attending to at most the last ``max_len`` tokens."""
        tokens = prompt
        for _ in range(length):
            step = self(tokens[:, -self.max_len :])[:, -1]
            if temperature == 0:
                nxt = step.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(step.float() / temperature, -1), 1, generator=generator)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder transformer (bigkern.nn.Transformer) with token and position embeddings.

    forward(src (N, S), tgt_in (N, T)) -> logits (N, T, tgt_vocab), with padding masks from
    ``pad_idx`` and a causal decoder; ``greedy_decode`` generates from ``bos_idx`` until every
    sequence has produced ``eos_idx`` or ``max_len`` tokens.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, d_model: int = 128, nhead: int = 4,
                 num_encoder_layers: int = 2, num_decoder_layers: int = 2, dim_feedforward: int = 256,
                 dropout: float = 0.1, max_len: int = 512, pad_idx: int = 0, bos_idx: int = 1, eos_idx: int = 2) -> None:  # fmt: skip
        super().__init__()
        self.pad_idx, self.bos_idx, self.eos_idx = pad_idx, bos_idx, eos_idx
        self.src_embed = _TokenEmbedding(src_vocab_size, d_model, max_len, dropout, pad_idx)
        self.tgt_embed = _TokenEmbedding(tgt_vocab_size, d_model, max_len, dropout, pad_idx)
        with warnings.catch_warnings():  # torch's nested-tensor fast path is off with norm_first: no news
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            self.transformer = bnn.Transformer(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward,
                                               dropout, batch_first=True, norm_first=True)  # fmt: skip
        self.head = nn.Linear(d_model, tgt_vocab_size)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padding = src == self.pad_idx
        return self.transformer.encoder(self.src_embed(src), src_key_padding_mask=padding), padding

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor) -> torch.Tensor:
        mask = causal_mask(tgt_in.shape[1], tgt_in.device)
        out = self.transformer.decoder(self.tgt_embed(tgt_in), memory, tgt_mask=mask, tgt_is_causal=True,
                                       tgt_key_padding_mask=tgt_in == self.pad_idx,
                                       memory_key_padding_mask=memory_padding)  # fmt: skip
        return self.head(out)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, padding = self.encode(src)
        return self.decode(tgt_in, memory, padding)

    @torch.no_grad()
    def greedy_decode(self, src: torch.Tensor, max_len: int) -> torch.Tensor:
        """(N, <= max_len + 1) token ids starting with bos_idx; positions after eos_idx hold pad_idx."""
        memory, padding = self.encode(src)
        out = torch.full((src.shape[0], 1), self.bos_idx, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(out, memory, padding)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.pad_idx), nxt)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == self.eos_idx
            if bool(done.all()):
                break
        return out
