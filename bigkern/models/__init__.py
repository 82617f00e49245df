"""Full models built from bigkern.nn layers: CNN classifiers, recurrent classifiers and language
models, transformers, and autoencoders.

Every model's state_dict has the keys of the same architecture written with torch.nn layers;
``to_torch(model)`` returns that twin (a copy, with every bigkern module turned back into its
torch.nn class), and ``load_state_dict`` works between the two in either direction.
"""

from __future__ import annotations

import copy

import torch

from bigkern.models.autoencoder import Autoencoder, ConvAutoencoder
from bigkern.models.cnn import CIFARConvNet, LeNet5, MNISTConvNet
from bigkern.models.rnn import GRUClassifier, LSTMClassifier, RecurrentLM, RNNClassifier
from bigkern.models.transformer import PositionalEncoding, Seq2SeqTransformer, TransformerClassifier, TransformerLM


def to_torch(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` in plain torch.nn (bigkern.unswap on a deep copy): same weights, same keys."""
    from bigkern.swap import unswap

    twin = copy.deepcopy(model)
    unswap(twin)
    return twin


__all__ = [
    "MNISTConvNet", "LeNet5", "CIFARConvNet", "LSTMClassifier", "GRUClassifier", "RNNClassifier", "RecurrentLM",
    "TransformerClassifier", "TransformerLM", "Seq2SeqTransformer", "PositionalEncoding", "Autoencoder",
    "ConvAutoencoder", "to_torch",
]  # fmt: skip
