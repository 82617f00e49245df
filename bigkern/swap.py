"""Swapping bigkern's drop-in modules into an existing model, in place, and back.

A module is swapped by changing its class to the bigkern subclass of its torch.nn class. The
object itself stays, so its parameters, buffers, device, dtype, training mode, hooks and every
reference other code holds to it are kept, and ``unswap`` is exact. Only modules whose type is
exactly a registered torch.nn class are swapped: a user subclass may override forward, so it
is left alone and the report says so.

A swapped Conv2d is also fused with the BatchNorm2d and/or ReLU/GELU/SiLU module after it (found
in the model's torch.fx graph, its traceable submodules' graphs, or nn.Sequential order) when that
is safe: the conv's class becomes bigkern.nn.conv.FusedConv2d and theirs an identity subclass
(bigkern/fusion.py), so parameters, buffers and state_dict keys stay where they were.

Hugging Face transformers models compute attention in functions rather than modules; ``swap``
switches each one's attention implementation to bigkern's (bigkern/integrations/transformers.py)
and ``unswap`` switches it back.

Op families register their modules with ``register_swappable``; the report says, per module,
what was swapped or kept and why, and which backend its calls will reach on the model's device.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from bigkern import backend

_SWAPPABLE: dict[type, tuple[type, str | None, str | None]] = {}  # torch class -> (bigkern class, op it runs, note)


def register_swappable(torch_class: type, bigkern_class: type, op: str | None, note: str | None = None) -> None:
    """Make ``swap`` replace ``torch_class`` modules by ``bigkern_class`` (a subclass running ``op``).

    op: None for a container whose bigkern ops run in its submodules (swapped on their own).
    note: what the report should add for every such module (e.g. which calls still run torch's code).
    """
    if not issubclass(bigkern_class, torch_class):
        raise TypeError(f"{bigkern_class.__qualname__} must subclass {torch_class.__qualname__} to be swapped in")
    _SWAPPABLE[torch_class] = (bigkern_class, op, note)


def _torch_class_of() -> dict[type, type]:
    """bigkern drop-in class -> the torch.nn class it replaces."""
    return {bk: tc for tc, (bk, _, _) in _SWAPPABLE.items()}


@dataclass(frozen=True)
class SwapEntry:
    name: str  # qualified module name ("" for the model itself)
    module_class: str
    action: str  # "swapped", "kept", "excluded"
    reason: str


@dataclass
class SwapReport:
    entries: list[SwapEntry]
    device: torch.device

    @property
    def swapped(self) -> list[SwapEntry]:
        return [e for e in self.entries if e.action == "swapped"]

    @property
    def not_swapped(self) -> list[SwapEntry]:
        return [e for e in self.entries if e.action not in ("swapped", "fused")]

    @property
    def fused(self) -> list[SwapEntry]:
        """Modules whose work now runs inside the kernel of the conv before them."""
        return [e for e in self.entries if e.action == "fused"]

    def __str__(self) -> str:
        lines = [
            f"bigkern.swap: {len(self.swapped)} swapped, {len(self.fused)} fused into a conv, "
            f"{len(self.not_swapped)} not swapped (device {self.device})"
        ]  # fmt: skip
        width = max([len(e.name or "<model>") for e in self.entries] + [6])
        class_width = max([len(e.module_class) for e in self.entries] + [20])
        if not self.entries:
            lines.append("  nothing in this model is a torch.nn module (or transformers model) bigkern replaces")
        for e in self.entries:
            lines.append(f"  {e.name or '<model>':<{width}}  {e.module_class:<{class_width}} {e.action:<8} {e.reason}")
        return "\n".join(lines)


def _matches(name: str, module: torch.nn.Module, patterns: Iterable) -> bool:
    """A pattern is a module class, a class name, or a glob over qualified module names."""
    for pattern in patterns:
        if isinstance(pattern, type):
            if isinstance(module, pattern):
                return True
        elif pattern == type(module).__name__ or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def _model_device(model: torch.nn.Module) -> torch.device:
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _serving_backend(op: str, device: torch.device) -> str:
    """Which backend this op's calls reach on ``device`` under the current backend choice."""
    probe = torch.empty(0, device=device) if device.type != "cuda" or torch.cuda.is_available() else None
    if probe is None:
        return "unknown (CUDA is not available in this process)"
    try:
        chosen = backend.select(op, probe)
    except backend.BackendUnavailableError as err:
        return f"none: {err}"
    if chosen == "torch":
        passed = [f"{b}: {backend.why_not(b, op, probe)}" for b in backend.auto_candidates(op, probe) if b != "torch"]
        return "torch (no bigkern kernel" + (f"; {'; '.join(passed)})" if passed else ")")
    return f"bigkern {chosen} kernels"


def swap(model: torch.nn.Module, include: Iterable | None = None, exclude: Iterable | None = None) -> SwapReport:
    """Replace, in place, every supported torch.nn module of ``model`` by its bigkern drop-in.

    include: only swap modules matching one of these (classes, class names or name globs).
    exclude: never swap modules matching one of these.
    Returns a SwapReport; ``print`` it to see what was swapped, what was not, and why.
    """
    exclude = list(exclude or [])
    include = None if include is None else list(include)
    device = _model_device(model)
    entries = []
    swapped_back = _torch_class_of()
    for name, module in model.named_modules():
        cls = type(module)
        if hasattr(cls, "_bigkern_original_class"):
            entries.append(SwapEntry(name, cls.__name__, "kept", "already fused by bigkern.swap"))
            continue
        if cls in swapped_back:
            entries.append(SwapEntry(name, cls.__name__, "kept", "already a bigkern module"))
            continue
        target = _SWAPPABLE.get(cls)
        if target is None:
            if any(isinstance(module, tc) for tc in _SWAPPABLE):
                entries.append(SwapEntry(name, cls.__name__, "kept", "a subclass of a swappable torch.nn class; its own code is kept"))
            continue
        bigkern_class, op, note = target
        if (include is not None and not _matches(name, module, include)) or _matches(name, module, exclude):
            entries.append(SwapEntry(name, cls.__name__, "excluded", "by include/exclude"))
            continue
        module.__class__ = bigkern_class
        reasons = ([] if op is None else [f"bigkern.ops.{op} -> {_serving_backend(op, device)}"]) + ([note] if note else [])
        reason = "; ".join(reasons)
        entries.append(SwapEntry(name, cls.__name__, "swapped", reason))
    _fuse_convolutions(model, entries, exclude)
    _swap_transformers_attention(model, entries, include, exclude, device)
    return SwapReport(entries, device)


def _transformers_models(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The outermost Hugging Face ``PreTrainedModel`` instances in ``model`` (found without
    importing transformers: a model from it is an instance of a class defined in it)."""
    found = []
    for name, module in model.named_modules():
        is_hf = type(module).__module__.startswith("transformers.") and hasattr(module, "set_attn_implementation")
        if is_hf and not any(name.startswith(f"{outer}.") or outer == "" for outer, _ in found):
            found.append((name, module))
    return found


def _swap_transformers_attention(model, entries: list[SwapEntry], include, exclude, device) -> None:
    """Hugging Face models compute attention in functions, not modules: switch their attention
    implementation to bigkern's (bigkern/integrations/transformers.py) and report it."""
    for name, hf_model in _transformers_models(model):
        cls = type(hf_model).__name__
        if (include is not None and not _matches(name, hf_model, include)) or _matches(name, hf_model, exclude):
            entries.append(SwapEntry(name, cls, "excluded", "attention implementation kept: by include/exclude"))
            continue
        from bigkern.integrations import transformers as hf

        try:
            previous = hf.use_bigkern_attention(hf_model)
        except (ValueError, NotImplementedError, AttributeError) as err:
            entries.append(SwapEntry(name, cls, "kept", f"its attention implementation cannot be changed: {err}"))
            continue
        entries.append(SwapEntry(name, cls, "swapped", f"attention implementation {previous!r} -> 'bigkern' "
                                                       f"(bigkern.ops.attention -> {_serving_backend('attention', device)})"))  # fmt: skip


def _fuse_convolutions(model: torch.nn.Module, entries: list[SwapEntry], exclude: list) -> None:
    """Fuse each swapped Conv2d with the BatchNorm2d / activation after it (bigkern/fusion.py)."""
    from bigkern import fusion
    from bigkern.nn.conv import Conv2d, FusedConv2d

    modules = dict(model.named_modules())
    by_name = {e.name: i for i, e in enumerate(entries)}
    for chain, found_by in fusion.find_chains(model, lambda m: type(m) is Conv2d):
        refused = fusion.refusals(model, chain, lambda name, module: _matches(name, module, exclude))
        if chain.batch_norm in refused:
            chain.batch_norm = chain.activation = None  # the activation is then not next to the conv
        if chain.activation in refused:
            chain.activation = None
        if refused:
            conv_entry = entries[by_name[chain.conv]]
            notes = "; ".join(f"not fused with {part}: {why}" for part, why in refused.items())
            entries[by_name[chain.conv]] = SwapEntry(
                conv_entry.name, conv_entry.module_class, conv_entry.action, f"{conv_entry.reason}; {notes}"
            )  # fmt: skip
        parts = [n for n in (chain.batch_norm, chain.activation) if n is not None]
        if not parts:
            continue
        fusion.apply(model, chain, FusedConv2d)
        described = []
        if chain.batch_norm:
            described.append(f"{chain.batch_norm} (BatchNorm2d: folded into the weights in eval mode, run after the conv in training)")
        if chain.activation:
            described.append(f"{chain.activation} ({modules[chain.activation]._bigkern_original_class.__name__}: in the epilogue)")
        conv_entry = entries[by_name[chain.conv]]
        entries[by_name[chain.conv]] = SwapEntry(
            conv_entry.name, conv_entry.module_class, conv_entry.action,
            f"{conv_entry.reason}; fused with {' and '.join(described)} into one kernel (found in the {found_by})",
        )  # fmt: skip
        for part in parts:
            entries.append(SwapEntry(part, modules[part]._bigkern_original_class.__name__, "fused", f"into {chain.conv}'s kernel"))


def unswap(model: torch.nn.Module) -> int:
    """Turn every bigkern drop-in module of ``model`` back into its torch.nn class; returns how many."""
    from bigkern import fusion

    back = _torch_class_of()
    count = 0
    for _, hf_model in _transformers_models(model):
        from bigkern.integrations import transformers as hf

        count += hf.restore_attention(hf_model)
    for module in model.modules():
        if fusion.restore(module):
            count += 1
            continue
        original = back.get(type(module))
        if original is not None:
            module.__class__ = original
            count += 1
    return count
