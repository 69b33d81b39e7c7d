"""Linear bridges between activation shapes: trained adapters and least-squares stitches."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._errors import IncompatibleModelsError

__all__ = ["Bridge"]

#: the most weights a flattening bridge may hold (larger: the plan should cut elsewhere).
MAX_FLAT_WEIGHTS = 1 << 25


class Bridge(nn.Module):
    """A linear map from activations of shape ``src`` to shape ``dst`` (both without batch).

    Rules, by shape:

    * two feature maps ``(C, H, W) → (C', H', W')``: resize to ``H'×W'`` (average pooling when
      shrinking, bilinear when growing), then a per-pixel linear map ``C → C'`` (a 1×1 conv);
    * two token sequences ``(N, D) → (N, D')`` with the same ``N``: a per-token linear map;
    * anything else: flatten, one linear map, reshape to ``dst``.

    Equal shapes start as the identity; otherwise PyTorch's default ``nn.Linear`` init.
    """

    def __init__(self, src: tuple[int, ...], dst: tuple[int, ...]) -> None:
        super().__init__()
        self.src, self.dst = tuple(src), tuple(dst)
        if len(src) == 3 and len(dst) == 3:
            self.mode, d_in, d_out = "map", src[0], dst[0]
        elif len(src) == 2 and len(dst) == 2 and src[0] == dst[0]:
            self.mode, d_in, d_out = "tokens", src[1], dst[1]
        else:
            self.mode, d_in, d_out = "flat", math.prod(src), math.prod(dst)
            if d_in * d_out > MAX_FLAT_WEIGHTS:
                raise IncompatibleModelsError(
                    f"the plan cannot be aligned: bridging activations of shape {self.src} to "
                    f"{self.dst} needs a {d_in}×{d_out} linear map; cut the networks where the "
                    "shapes are closer (pass an explicit plan of (guide, target) module names)")
        self.linear = nn.Linear(d_in, d_out)
        if self.src == self.dst or (self.mode != "flat" and d_in == d_out):
            with torch.no_grad():
                self.linear.weight.copy_(torch.eye(d_out, d_in))
                self.linear.bias.zero_()

    def features(self, x: Tensor) -> Tensor:
        """The rows the linear map acts on: ``(rows, d_in)``."""
        if self.mode == "map":
            h, w = self.dst[1:]
            if tuple(x.shape[-2:]) != (h, w):
                if x.shape[-2] >= h and x.shape[-1] >= w:
                    x = F.adaptive_avg_pool2d(x, (h, w))
                else:
                    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
            return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])
        if self.mode == "tokens":
            return x.reshape(-1, x.shape[-1])
        return x.reshape(x.shape[0], -1)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        y = self.linear(self.features(x).to(self.linear.weight.dtype))
        if self.mode == "map":
            c, h, w = self.dst
            return y.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return y.reshape(n, *self.dst)

    def extra_repr(self) -> str:
        return f"{self.src} -> {self.dst}, mode={self.mode}"

    @torch.no_grad()
    def fit_least_squares(self, pairs: list[tuple[Tensor, Tensor]], ridge: float = 1e-3) -> None:
        """Set the weights to the ridge least-squares fit of ``dst`` rows from ``src`` rows.

        Rule: with ``X`` the bridge features plus a column of ones and ``Y`` the targets,
        ``W = (XᵀX + λI)⁻¹ XᵀY`` with ``λ = ridge · trace(XᵀX) / d`` (float64 accumulation).
        """
        xtx: Tensor | None = None
        xty: Tensor | None = None
        for a, b in pairs:
            fa = self.features(a).double()
            fa = torch.cat([fa, torch.ones(fa.shape[0], 1, dtype=fa.dtype, device=fa.device)], 1)
            if self.mode == "map":
                fb = b.permute(0, 2, 3, 1).reshape(-1, b.shape[1]).double()
            elif self.mode == "tokens":
                fb = b.reshape(-1, b.shape[-1]).double()
            else:
                fb = b.reshape(b.shape[0], -1).double()
            xtx = fa.T @ fa if xtx is None else xtx + fa.T @ fa
            xty = fa.T @ fb if xty is None else xty + fa.T @ fb
        assert xtx is not None and xty is not None
        d = xtx.shape[0]
        lam = ridge * float(torch.trace(xtx)) / d + 1e-12
        w = torch.linalg.solve(xtx + lam * torch.eye(d, dtype=xtx.dtype, device=xtx.device), xty)
        self.linear.weight.copy_(w[:-1].T.to(self.linear.weight.dtype))
        self.linear.bias.copy_(w[-1].to(self.linear.bias.dtype))
