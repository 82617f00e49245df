"""Finding the Conv2d -> BatchNorm2d -> activation chains ``bigkern.swap`` fuses into one kernel.

A chain is a Conv2d whose output feeds only a BatchNorm2d (eval mode: folded into the conv's
weights) and/or an activation module (ReLU, SiLU, GELU in its exact erf form), each feeding
only the next. Chains are read from the model's torch.fx graph when ``torch.fx.symbolic_trace``
can trace it (so they are found in any module structure, e.g. a ResNet block's conv1 -> bn1);
otherwise from consecutive children of every nn.Sequential. A module is fused away only when it
is called once in the whole graph (a ReLU module shared by two calls keeps running), it has no
hooks, and (for a batch norm) its channel count is the conv's.

Fusing keeps every module object: the conv's class becomes bigkern.nn.conv.FusedConv2d, which
holds the others unregistered (the state_dict does not change), and theirs becomes an identity
subclass of their own class (``FUSED_AWAY``), so the model's forward code runs unchanged.
Every class involved names its original in ``_bigkern_original_class``; unswap restores them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ACTIVATIONS = {torch.nn.ReLU: "relu", torch.nn.SiLU: "silu", torch.nn.GELU: "gelu"}


@dataclass
class Chain:
    conv: str  # qualified module names
    batch_norm: str | None
    activation: str | None


class _FusedAway:
    """Mixin: the module's work is done by the FusedConv2d before it; its forward passes through."""

    def forward(self, input):
        return input


class FusedAwayBatchNorm2d(_FusedAway, torch.nn.BatchNorm2d):
    _bigkern_original_class = torch.nn.BatchNorm2d


class FusedAwayReLU(_FusedAway, torch.nn.ReLU):
    _bigkern_original_class = torch.nn.ReLU


class FusedAwaySiLU(_FusedAway, torch.nn.SiLU):
    _bigkern_original_class = torch.nn.SiLU


class FusedAwayGELU(_FusedAway, torch.nn.GELU):
    _bigkern_original_class = torch.nn.GELU


#: original class -> its fused-away twin (named classes, so swapped models still pickle)
FUSED_AWAY = {c._bigkern_original_class: c for c in (FusedAwayBatchNorm2d, FusedAwayReLU, FusedAwaySiLU, FusedAwayGELU)}


def activation_name(module: torch.nn.Module) -> str | None:
    name = ACTIVATIONS.get(type(module))
    if name == "gelu" and module.approximate != "none":
        return None  # the tanh approximation is not the kernel's gelu
    return name


def _hooked(module: torch.nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks)


def _fusable_bn(conv: torch.nn.Module, bn: torch.nn.Module) -> bool:
    return type(bn) is torch.nn.BatchNorm2d and bn.num_features == conv.out_channels and not _hooked(bn)


def _fusable_activation(module: torch.nn.Module) -> bool:
    return activation_name(module) is not None and not _hooked(module)


class _LeafTracer(torch.fx.Tracer):
    """fx's tracer, with bigkern's drop-in modules as leaves too (fx treats only torch.nn's own
    classes as leaves; tracing into a bigkern module would run its argument checks on proxies)."""

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return type(m).__module__.startswith("bigkern.") or super().is_leaf_module(m, qualname)


def _chains_from_graph(model: torch.nn.Module, is_conv) -> list[Chain] | None:
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # any model fx cannot trace (data-dependent control flow, ...): Sequentials only
        return None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def single_module_user(node, accept):
        users = list(node.users)
        if len(users) != 1 or users[0].op != "call_module" or calls[users[0].target] != 1:
            return None
        return users[0] if accept(modules[users[0].target]) else None

    chains = []
    for node in graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or not is_conv(modules[node.target]):
            continue
        conv = modules[node.target]
        bn = single_module_user(node, lambda m: _fusable_bn(conv, m))
        act = single_module_user(bn or node, _fusable_activation)
        if bn is not None or act is not None:
            chains.append(Chain(node.target, bn.target if bn else None, act.target if act else None))
    return chains


def _chains_from_sequentials(model: torch.nn.Module, is_conv) -> list[Chain]:
    chains = []
    for prefix, module in model.named_modules():
        if type(module) is not torch.nn.Sequential:
            continue
        names = list(module._modules)
        i = 0
        while i < len(names):
            conv = module._modules[names[i]]
            if not is_conv(conv):
                i += 1
                continue
            qualified = [f"{prefix}.{n}" if prefix else n for n in names]
            bn = act = None
            j = i + 1
            if j < len(names) and _fusable_bn(conv, module._modules[names[j]]):
                bn, j = qualified[j], j + 1
            if j < len(names) and _fusable_activation(module._modules[names[j]]):
                act, j = qualified[j], j + 1
            if bn or act:
                chains.append(Chain(qualified[i], bn, act))
            i = j
    return chains


def find_chains(model: torch.nn.Module, is_conv) -> tuple[list[Chain], str]:
    """The fusable chains of ``model`` whose conv satisfies ``is_conv``, and how they were found."""
    chains = _chains_from_graph(model, is_conv)
    if chains is not None:
        return chains, "torch.fx graph"
    return _chains_from_sequentials(model, is_conv), "nn.Sequential order (the model is not fx-traceable)"


def apply(model: torch.nn.Module, chain: Chain, fused_conv_class: type) -> None:
    """Fuse one chain in place (see the module docstring)."""
    modules = dict(model.named_modules())
    conv = modules[chain.conv]
    bn = modules[chain.batch_norm] if chain.batch_norm else None
    act = modules[chain.activation] if chain.activation else None
    conv.__class__ = fused_conv_class
    conv._bigkern_fusion = (bn, activation_name(act) if act is not None else None)
    for module in (bn, act):
        if module is not None:
            module.__class__ = FUSED_AWAY[type(module)]


def restore(module: torch.nn.Module) -> bool:
    """Undo ``apply`` for one module; True when it was a fused or fused-away module."""
    original = getattr(type(module), "_bigkern_original_class", None)
    if original is None:
        return False
    module.__class__ = original
    module.__dict__.pop("_bigkern_fusion", None)
    return True
