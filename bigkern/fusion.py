"""Finding the Conv2d -> BatchNorm2d -> activation chains ``bigkern.swap`` fuses into one kernel.

A chain is a Conv2d whose output feeds only a BatchNorm2d (eval mode: folded into the conv's
weights) and/or an activation module (ReLU, SiLU, GELU in its exact erf form), each feeding
only the next. Chains are read from the model's torch.fx graph when it traces (so they are found
in any module structure, e.g. a ResNet block's conv1 -> bn1), else from its traceable submodules'
graphs and nn.Sequential order (``find_chains``). A module is fused away only when it is called
once in the graph (a ReLU module shared by two calls keeps running), has no hooks, is registered
in one place, and (for a batch norm) has the conv's channel count (``refusals`` says why not).

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
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks)


def _fusable_bn(conv: torch.nn.Module, bn: torch.nn.Module) -> bool:
    return type(bn) is torch.nn.BatchNorm2d and bn.num_features == conv.out_channels


def _fusable_activation(module: torch.nn.Module) -> bool:
    return activation_name(module) is not None


class _LeafTracer(torch.fx.Tracer):
    """fx's tracer, with bigkern's drop-in and fused modules as leaves too (fx treats only
    torch.nn's own classes as leaves; tracing into a bigkern module would run its argument checks
    on proxies). Other bigkern code, such as bigkern.models, is traced through like user code."""

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        where = type(m).__module__
        return where.startswith("bigkern.nn.") or where == __name__ or super().is_leaf_module(m, qualname)


def _chains_from_graph(model: torch.nn.Module, is_conv) -> list[Chain] | None:
    """Chains in ``model``'s fx graph, or None when it does not trace."""
    try:
        graph = _LeafTracer().trace(model)
    except Exception:  # data-dependent control flow, checks on input shapes, ...
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


def _sequential_chains(sequential: torch.nn.Sequential, is_conv) -> list[Chain]:
    """Chains among the direct children of one nn.Sequential, in their order."""
    children = list(sequential._modules.items())
    chains, i = [], 0
    while i < len(children):
        name, conv = children[i]
        i += 1
        if not is_conv(conv):
            continue
        bn = act = None
        if i < len(children) and _fusable_bn(conv, children[i][1]):
            bn, i = children[i][0], i + 1
        if i < len(children) and _fusable_activation(children[i][1]):
            act, i = children[i][0], i + 1
        if bn or act:
            chains.append(Chain(name, bn, act))
    return chains


def find_chains(model: torch.nn.Module, is_conv) -> list[tuple[Chain, str]]:
    """(chain, where it was found) for every chain of ``model`` whose conv satisfies ``is_conv``.

    The whole model's torch.fx graph when it traces. When it does not (data-dependent control
    flow, shape checks on the input, as in most Hugging Face models): the graphs of its largest
    submodules that do trace (e.g. each ResNet block or conv-norm-act layer), and the order of
    consecutive children in each nn.Sequential (or subclass keeping its forward) in the parts that
    do not trace either. Outside a traced graph, fusing assumes what the module structure says:
    that the parent calls a traced submodule or a Sequential as a whole and does not call its
    convs, batch norms or activations on their own elsewhere.
    """
    chains = _chains_from_graph(model, is_conv)
    if chains is not None:
        return [(chain, "torch.fx graph") for chain in chains]
    found = []

    def prefixed(chain: Chain, prefix: str) -> Chain:
        return Chain(*(prefix + name if name else None for name in (chain.conv, chain.batch_norm, chain.activation)))

    def visit(module: torch.nn.Module, prefix: str) -> None:  # ``module`` does not trace
        if isinstance(module, torch.nn.Sequential) and type(module).forward is torch.nn.Sequential.forward:
            where = "nn.Sequential order (not fx-traceable)"
            found.extend((prefixed(chain, prefix), where) for chain in _sequential_chains(module, is_conv))
        for name, child in module.named_children():
            if is_conv(child) or not any(is_conv(m) for m in child.modules()):
                continue
            chains = _chains_from_graph(child, is_conv)
            if chains is None:
                visit(child, f"{prefix}{name}.")
                continue
            where = f"torch.fx graph of {prefix}{name} (the model as a whole is not fx-traceable)"
            found.extend((prefixed(chain, f"{prefix}{name}."), where) for chain in chains)

    visit(model, "")
    return found


def refusals(model: torch.nn.Module, chain: Chain, excluded) -> dict[str, str]:
    """Why each part of ``chain`` that must stay a module of its own cannot be fused: {name: why}.

    excluded(name, module) -> bool: the user's include/exclude choice.
    Fusing changes what the conv module outputs, so hooks on the conv would see the fused output;
    a part fused away becomes an identity wherever it is used, so it must have no hooks and be
    registered in one place only (a module object shared by two parents may be called twice).
    """
    modules = dict(model.named_modules())
    registrations: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        registrations[id(m)] = registrations.get(id(m), 0) + 1
    conv = modules[chain.conv]
    if conv._forward_hooks or conv._backward_hooks or conv._backward_pre_hooks:
        conv_refused = "the conv has forward or backward hooks, which would see the fused output"
    elif registrations[id(conv)] > 1:
        conv_refused = "the conv is registered more than once in the model (shared)"
    else:
        conv_refused = None
    refused = {}
    for part in (chain.batch_norm, chain.activation):
        if part is None:
            continue
        module = modules[part]
        if conv_refused:
            refused[part] = conv_refused
        elif excluded(part, module):
            refused[part] = "excluded by include/exclude"
        elif _hooked(module):
            refused[part] = "it has hooks"
        elif registrations[id(module)] > 1:
            refused[part] = "it is registered more than once in the model (shared)"
    return refused


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
