"""Drop-in torch.nn Transformer layers whose attention runs ``bigkern.ops.attention``.

Each class subclasses the torch.nn class of the same name, with its constructor, submodules,
state_dict keys and repr. The constructors run torch's and then turn every torch.nn attention
block (and cloned layer) they built into its bigkern class, in place, so a model built under a
given seed has the very weights torch's would. Modules the caller passes in (``custom_encoder``,
``custom_decoder``, ``norm``) are used as given.

Torch's encoder takes two fused paths that would skip bigkern's kernel: the layer's
``torch._transformer_encoder_layer_fwd`` (eval mode, batch_first, ...) and the encoder's
nested-tensor conversion of padded batches. These classes never take them: the layers compute
the same math through ``bigkern.nn.MultiheadAttention`` (``need_weights=False``), and
``enable_nested_tensor`` is accepted and ignored. The decoder side has no fused path in torch,
so its forwards are torch's own, running the swapped-in attention.

Masks follow torch's rules (bool True = masked, float = added; mismatched mask types warn and
become additive). Bool masks stay bool down to the kernel. A causal ``mask`` (hinted with
``is_causal=True``, or detected by the encoder and decoder as torch does) runs the kernel's
causal mode instead of being read, unless a key padding mask comes too: then the two are
merged into one mask, as in torch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from bigkern.nn.attention import MultiheadAttention, unify_mask_types
from bigkern.swap import register_swappable


def _adopt(module: torch.nn.Module) -> None:
    """Turn the plain torch.nn attention and Transformer modules inside ``module`` into bigkern's, in place."""
    for sub in module.modules():
        bigkern_class = _BIGKERN_CLASS.get(type(sub))
        if bigkern_class is not None:
            sub.__class__ = bigkern_class


def _causal_mask_detected(mask: torch.Tensor | None, is_causal: bool | None, size: int | None) -> bool:
    """torch's detection: is_causal when given, else whether ``mask`` equals the square causal mask of ``size``."""
    if is_causal is not None or mask is None:
        return is_causal is True
    size = mask.size(-2) if size is None else size
    causal = torch.nn.Transformer.generate_square_subsequent_mask(size, device=mask.device, dtype=mask.dtype)
    return mask.size() == causal.size() and bool((mask == causal).all())


def _seq_len(src: torch.Tensor, batch_first: bool) -> int | None:
    if src.is_nested:
        return None
    if src.dim() == 2:
        return src.size(0)
    return src.size(1 if batch_first else 0)


class TransformerEncoderLayer(torch.nn.TransformerEncoderLayer):
    """torch.nn.TransformerEncoderLayer whose self-attention runs bigkern's kernel; never torch's fused layer."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable[[torch.Tensor], torch.Tensor] = F.relu, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                         norm_first, bias, device=device, dtype=dtype)  # fmt: skip
        _adopt(self)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        # torch's layer math without its fused fast path (torch._transformer_encoder_layer_fwd).
        src_key_padding_mask, src_mask = unify_mask_types(
            src_key_padding_mask, "src_key_padding_mask", src_mask, "src_mask", src.dtype
        )
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x


class TransformerDecoderLayer(torch.nn.TransformerDecoderLayer):
    """torch.nn.TransformerDecoderLayer whose self- and cross-attention run bigkern's kernel."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable[[torch.Tensor], torch.Tensor] = F.relu, layer_norm_eps: float = 1e-5,
                 batch_first: bool = False, norm_first: bool = False, bias: bool = True, device=None,
                 dtype=None) -> None:  # fmt: skip
        super().__init__(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps, batch_first,
                         norm_first, bias, device=device, dtype=dtype)  # fmt: skip
        _adopt(self)


class TransformerEncoder(torch.nn.TransformerEncoder):
    """torch.nn.TransformerEncoder running bigkern attention; never converts to nested tensors.

    ``encoder_layer`` may be a torch.nn or a bigkern layer: its clones are bigkern's either way
    (a user subclass is cloned as is, its plain torch.nn attention blocks turned into bigkern's).
    """

    def __init__(self, encoder_layer: torch.nn.TransformerEncoderLayer, num_layers: int,
                 norm: torch.nn.Module | None = None, enable_nested_tensor: bool = True,
                 mask_check: bool = True) -> None:  # fmt: skip
        super().__init__(encoder_layer, num_layers, norm, enable_nested_tensor, mask_check)
        _adopt(self.layers)

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        # torch's encoder without the nested-tensor conversion of padded batches.
        src_key_padding_mask, mask = unify_mask_types(
            src_key_padding_mask, "src_key_padding_mask", mask, "mask", src.dtype
        )
        first_layer = self.layers[0]
        is_causal = _causal_mask_detected(mask, is_causal, _seq_len(src, first_layer.self_attn.batch_first))
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(torch.nn.TransformerDecoder):
    """torch.nn.TransformerDecoder running bigkern attention (clones of ``decoder_layer`` are bigkern's)."""

    def __init__(self, decoder_layer: torch.nn.TransformerDecoderLayer, num_layers: int,
                 norm: torch.nn.Module | None = None) -> None:  # fmt: skip
        super().__init__(decoder_layer, num_layers, norm)
        _adopt(self.layers)


class Transformer(torch.nn.Transformer):
    """torch.nn.Transformer whose attention runs bigkern's kernel.

    The encoder and decoder it builds are bigkern's; a ``custom_encoder`` / ``custom_decoder``
    is used as given (swap it with ``bigkern.swap`` if wanted).
    """

    def __init__(self, d_model: int = 512, nhead: int = 8, num_encoder_layers: int = 6, num_decoder_layers: int = 6,
                 dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: str | Callable[[torch.Tensor], torch.Tensor] = F.relu, custom_encoder=None,
                 custom_decoder=None, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device=None, dtype=None) -> None:  # fmt: skip
        super().__init__(d_model, nhead, num_encoder_layers, num_decoder_layers, dim_feedforward, dropout, activation,
                         custom_encoder, custom_decoder, layer_norm_eps, batch_first, norm_first, bias,
                         device=device, dtype=dtype)  # fmt: skip
        if custom_encoder is None:
            _adopt(self.encoder)
        if custom_decoder is None:
            _adopt(self.decoder)


#: The plain torch.nn class -> its bigkern class (for the constructors' in-place conversion).
_BIGKERN_CLASS = {
    torch.nn.MultiheadAttention: MultiheadAttention,
    torch.nn.TransformerEncoderLayer: TransformerEncoderLayer,
    torch.nn.TransformerDecoderLayer: TransformerDecoderLayer,
    torch.nn.TransformerEncoder: TransformerEncoder,
    torch.nn.TransformerDecoder: TransformerDecoder,
}

# The layers and stacks run no op themselves: their attention modules are swapped (and listed) on their own.
_CONTAINER = "its attention modules are listed on their own lines"
register_swappable(torch.nn.TransformerEncoderLayer, TransformerEncoderLayer, None,
                   note=f"never torch's fused encoder layer; {_CONTAINER}")
register_swappable(torch.nn.TransformerEncoder, TransformerEncoder, None,
                   note=f"never converts padded batches to nested tensors; {_CONTAINER}")
register_swappable(torch.nn.TransformerDecoderLayer, TransformerDecoderLayer, None, note=_CONTAINER)
register_swappable(torch.nn.TransformerDecoder, TransformerDecoder, None, note=_CONTAINER)
register_swappable(torch.nn.Transformer, Transformer, None, note=_CONTAINER)
