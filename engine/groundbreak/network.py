"""The known network architectures, built by name.

A model package names its architecture (``mlm:architecture``); loading builds that architecture here
and fills it with tensors from a safetensors file (strict keys). A package therefore never carries or
runs code: an unknown name is a ModelError, not an import.

The family is a ResNet-18-like CNN with a native N-band input (no RGB pretraining trick), two heads:

- ``chip``: one logit per chip for the positive class (global average pool of the stride-32 features);
- ``cells``: a coarse activity map, one logit per 16 x 16 px cell, from a light head on the stride-16
  features (256 px input -> 16 x 16 cells).

``forward`` returns ``(chip_logits (N,), cell_logits (N, H/16, W/16))``: plain tensors so the module
traces, freezes, converts to OpenVINO and quantises without wrappers. Training code builds the same
module with ``build_network(name, bands)`` and trains it as any ``nn.Module`` (BatchNorm, ``.train()``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Mapping, Tuple

import torch
from torch import nn

from groundbreak.errors import ModelError

log = logging.getLogger(__name__)

#: Side of one activity cell in input pixels (the stride of the features the cell head reads).
CELL_STRIDE = 16


@dataclass(frozen=True, slots=True)
class ArchitectureSpec:
    """What a registry name means. ``widths`` are the channels of the four residual stages."""

    name: str
    widths: Tuple[int, int, int, int]
    blocks: Tuple[int, int, int, int] = (2, 2, 2, 2)
    cell_head_width: int = 64
    description: str = ""


def _spec(width: int, description: str) -> ArchitectureSpec:
    return ArchitectureSpec(
        name=f"resnet18-w{width}",
        widths=(width, 2 * width, 4 * width, 8 * width),
        cell_head_width=max(16, 2 * width),
        description=description,
    )


#: Registry: architecture name -> spec. Names are stable: published packages refer to them.
ARCHITECTURES: Dict[str, ArchitectureSpec] = {
    s.name: s
    for s in (
        _spec(8, "tiny ResNet-18 (widths 8-64): for tests only"),
        _spec(16, "quarter-width ResNet-18 (widths 16-128)"),
        _spec(32, "half-width ResNet-18 (widths 32-256): the default, ~1/4 the FLOPs of ResNet-18"),
        _spec(64, "full-width ResNet-18 (widths 64-512)"),
    )
}

DEFAULT_ARCHITECTURE = "resnet18-w32"


class BasicBlock(nn.Module):
    """The ResNet basic block (two 3x3 convs) with a 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down: nn.Module
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )
        else:
            self.down = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.down(x))


class ChipNet(nn.Module):
    """ResNet-18-like backbone + chip head + cell head (see the module docstring)."""

    def __init__(self, spec: ArchitectureSpec, in_channels: int) -> None:
        super().__init__()
        self.spec = spec
        self.in_channels = in_channels
        w = spec.widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(w[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        cin = w[0]
        for i, (cout, n) in enumerate(zip(w, spec.blocks, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(cin, cout, stride)] + [BasicBlock(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.chip_head = nn.Linear(w[3], 1)
        h = spec.cell_head_width
        self.cell_head = nn.Sequential(
            nn.Conv2d(w[2], h, 3, padding=1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU(inplace=True),
            nn.Conv2d(h, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.layer2(self.layer1(self.stem(x)))
        f16 = self.layer3(x)
        f32 = self.layer4(f16)
        chip = self.chip_head(torch.flatten(self.pool(f32), 1)).squeeze(1)
        cells = self.cell_head(f16).squeeze(1)
        return chip, cells


def architecture_spec(name: str) -> ArchitectureSpec:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(
            f"unknown model architecture {name!r}",
            hint=f"known architectures: {', '.join(sorted(ARCHITECTURES))}; "
            "upgrade groundbreak if the package needs a newer one",
        ) from None


def build_network(name: str, in_channels: int, *, seed: int | None = 0) -> ChipNet:
    """Build architecture ``name`` for ``in_channels`` bands; deterministic init when ``seed`` is set.

    Returned in train mode like any fresh ``nn.Module``; call ``.eval()`` for inference.
    """
    spec = architecture_spec(name)
    if in_channels < 1:
        raise ModelError(f"a network needs at least one input band, got {in_channels}")
    if seed is None:
        net = ChipNet(spec, in_channels)
        _init_weights(net)
        return net
    # fork_rng keeps the caller's global RNG stream untouched by our seeded init.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ChipNet(spec, in_channels)
        _init_weights(net)
    return net


def _init_weights(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    # Zero-init the last BN of each residual branch: blocks start as identities, which trains
    # better from scratch (Goyal et al. 2017) and keeps a random net's activations bounded.
    for m in net.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def state_dict_for_save(net: nn.Module) -> Dict[str, torch.Tensor]:
    """Contiguous fp32 tensors (what safetensors stores), BN counters included."""
    return {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}


def load_weights(net: nn.Module, path: Path) -> nn.Module:
    """Fill ``net`` from a safetensors file; refuses missing/unexpected keys and wrong shapes.

    safetensors stores raw tensors only, so a weights file can never execute code (a pickle
    can). A file that is not safetensors is a ModelError, whatever its name.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"{path}: not a readable safetensors file ({exc})",
            hint="model weights must be a .safetensors file written by `groundbreak` "
            "(pickled .pt/.pth checkpoints are refused because loading them can run code)",
        ) from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        spec = getattr(net, "spec", None)
        raise ModelError(
            f"{path}: weights do not match architecture {spec.name if spec is not None else None!r}: "
            f"missing {_few(missing)}, unexpected {_few(unexpected)}",
            hint="the package's mlm:architecture and its weights file must come from the same model",
        )
    bad = [
        f"{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise ModelError(
            f"{path}: weight shapes do not match the architecture: {_few(bad)}",
            hint="check the package's bands and mlm:architecture against the weights",
        )
    converted = {
        k: (t.to(expected[k].dtype) if t.dtype != expected[k].dtype else t) for k, t in tensors.items()
    }
    net.load_state_dict(converted, strict=True)
    return net


def _few(items: list, n: int = 5) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(map(str, items[:n])) + more


def calibrate_batchnorm(
    net: ChipNet, batches: Callable[[int], torch.Tensor], steps: int = 8
) -> ChipNet:
    """Recompute BN running statistics from ``batches(i)`` (cumulative average), then eval mode.

    Used to give random (demo/test) weights realistic activation statistics, so their scores
    spread over (0, 1) instead of saturating; training code may reuse it after a fine-tune.
    """
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the calibration batches
    net.train()
    with torch.no_grad():
        for i in range(steps):
            net(batches(i))
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return net.eval()


def known_architectures() -> Mapping[str, ArchitectureSpec]:
    return dict(ARCHITECTURES)
