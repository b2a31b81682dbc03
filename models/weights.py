"""A backbone from a local file: a zoo model's starting weights (``--weights PATH``).

A ``.safetensors`` file is read by ``safetensors`` (no pickle at all); a ``.pt``/``.pth`` file by
``torch.load(weights_only=True)``, which unpickles tensors and plain containers only. Either
holds a state dict, or a run's logged ``model.pt`` (``{"model": state_dict, "classes": ...}``)
whose ``"model"`` is taken. Every tensor whose name and shape match the model's is copied in;
the others (the classifier head when the class count differs, the first layer when the channel
count does) keep their fresh initialisation. ``freeze`` turns off the gradients of what was
copied, so that the new head learns first on a body it cannot yet spoil.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

SAFETENSORS = (".safetensors",)
PICKLED_TENSORS = (".pt", ".pth", ".bin")


class WeightsError(ValueError):
    """A weights file that cannot start this model: its message names the file."""


def read(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix in SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
    elif path.suffix in PICKLED_TENSORS:
        try:
            with warnings.catch_warnings():  # a pickle protocol torch did not write: the error below says enough
                warnings.simplefilter("ignore")
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001  UnpicklingError, RuntimeError, EOFError ...: torch's text is pages long
            raise WeightsError(f"{path}: not a state dict of tensors (torch.load(weights_only=True) refuses it: "
                               "objects other than tensors and plain containers, or not a torch file)") from None
    else:
        raise WeightsError(f"{path}: weights are a .safetensors file or a .pt/.pth state dict, not {path.suffix!r}")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # a run's model.pt
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: holds no state dict (a mapping of names to tensors)")
    return state


@dataclass(frozen=True)
class Loaded:
    copied: tuple[str, ...]  # the model's tensors taken from the file
    fresh: tuple[str, ...]  # the model's tensors the file had not, or not in this shape
    frozen: tuple[str, ...] = ()  # the parameters ``freeze`` stopped (not those the model fixes itself)

    def note(self, path: str | os.PathLike) -> str:
        kept = f"; {len(self.fresh)} fresh ({_short(self.fresh)})" if self.fresh else ""
        return f"weights {Path(path).name}: {len(self.copied)} tensors copied{kept}"


def _short(names: tuple[str, ...]) -> str:
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def load_into(model: nn.Module, path: str | os.PathLike, *, freeze: bool = False) -> Loaded:
    """Copy ``path``'s matching tensors into ``model``; with ``freeze``, stop their gradients."""
    state = read(path)
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k in dict(model.named_parameters()) for k in matching):
        sample = next(iter(state), "none")
        raise WeightsError(f"{path}: none of its {len(state)} tensors fits this model by name and shape "
                           f"(the file has {sample!r}; the model {next(iter(own))!r})")
    model.load_state_dict(matching, strict=False)
    learns = [name for name, p in model.named_parameters() if name not in matching and p.requires_grad]
    # Nothing fresh to learn first (the same class count): nothing is frozen.
    frozen = tuple(name for name, p in model.named_parameters()
                   if freeze and learns and name in matching and p.requires_grad)
    for name, parameter in model.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return Loaded(tuple(matching), tuple(k for k in own if k not in matching), frozen)


def unfreeze(model: nn.Module, loaded: Loaded) -> None:
    """Gradients back on for what ``load_into(..., freeze=True)`` stopped."""
    for name, parameter in model.named_parameters():
        if name in loaded.frozen:
            parameter.requires_grad_(True)
