"""The ``nas-warmstart`` command.

Model references: ``timm:<name>`` (built with ``pretrained=False``; weights from a local
``.safetensors`` file with ``--source-weights``). Bad arguments print one line and exit 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from torch import nn

from ._errors import InvalidArgumentError, NasWarmstartError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, not argparse's usage block: scripts grep it, people read it.
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _build_model(ref: str, *, num_classes: int) -> nn.Module:
    kind, _, name = ref.partition(":")
    if kind != "timm" or not name:
        raise InvalidArgumentError(
            f"model reference {ref!r} is not understood; use timm:<name>, e.g. timm:resnet18"
        )
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        raise InvalidArgumentError(
            f"timm has no model {name!r}" + (f"; similar names: {', '.join(close)}" if close else "")
        )
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def _load_weights(model: nn.Module, path: str) -> None:
    from safetensors.torch import load_file

    try:
        state = load_file(path)
    except (OSError, ValueError) as e:
        raise InvalidArgumentError(f"cannot read weights {path!r}: {e}") from None
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InvalidArgumentError(
            f"weights {path!r} do not fit the model: {len(result.missing_keys)} missing and "
            f"{len(result.unexpected_keys)} unexpected keys (first: "
            f"{(result.missing_keys or result.unexpected_keys)[0]!r})"
        )


def _cmd_similarity(args: argparse.Namespace) -> dict[str, Any]:
    from ._similarity import similarity

    a = _build_model(args.a, num_classes=args.num_classes)
    b = _build_model(args.b, num_classes=args.num_classes)
    t0 = time.perf_counter()
    value = similarity(a, b, layers=args.layers)
    out = {"a": args.a, "b": args.b, "similarity": value, "layers": args.layers, "seconds": time.perf_counter() - t0}
    if not args.json:
        print(f"{value:.4f}  similarity({args.a}, {args.b})")
    return out


def _cmd_transfer(args: argparse.Namespace) -> dict[str, Any]:
    from safetensors.torch import save_file

    from ._transfer import transfer

    src = _build_model(args.source, num_classes=args.num_classes)
    if args.source_weights:
        _load_weights(src, args.source_weights)
    tgt = _build_model(args.target, num_classes=args.num_classes)
    report = transfer(
        src, tgt, matching=args.matching, method=args.method, bn_stats=not args.no_bn_stats,
        layers=args.layers, seed=args.seed,
    )
    state = {k: v.detach().contiguous() for k, v in tgt.state_dict().items()}
    save_file(state, args.out, metadata={"nas_warmstart": json.dumps({"source": args.source, "target": args.target})})
    if not args.json:
        print(report.summary())
        for c in report.copied[: args.show]:
            print(f"  {c.target:<40} <- {c.source:<40} [{c.target_index}] {c.rule}")
        if len(report.copied) > args.show:
            print(f"  ... {len(report.copied) - args.show} more (use --json for all)")
        for note in report.notes:
            print(f"  note: {note}")
        print(f"wrote {args.out}")
    return {**report.to_dict(), "out": args.out}


def _cmd_demo(args: argparse.Namespace) -> dict[str, Any]:
    from ._demo import run_demo

    return run_demo(quiet=args.json)


def _parser() -> _Parser:
    p = _Parser(prog="nas-warmstart", description="Warm-start architecture search from a pool of trained networks.")
    p.add_argument("--version", action="version", version=_version())
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--layers", choices=("extended", "paper"), default="extended",
                        help="'paper' matches only conv/BN/linear as the DPIAT authors (default: extended)")
        sp.add_argument("--num-classes", type=int, default=1000, help="classifier size of timm models")
        sp.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    s = sub.add_parser("similarity", help="DPIAT similarity of two architectures")
    s.add_argument("a", help="model reference, e.g. timm:resnet18")
    s.add_argument("b", help="model reference")
    common(s)
    s.set_defaults(func=_cmd_similarity)

    t = sub.add_parser("transfer", help="transfer parameters from SOURCE into a fresh TARGET")
    t.add_argument("source")
    t.add_argument("target")
    t.add_argument("--out", required=True, help="where to write the target's weights (.safetensors)")
    t.add_argument("--source-weights", help="local .safetensors file with the source's trained weights")
    t.add_argument("--matching", default="dp", help="dp, bipartite, nbipartite or random")
    t.add_argument("--method", default="clip", help="clip, clip_norm, full or magnitude")
    t.add_argument("--no-bn-stats", action="store_true", help="leave BatchNorm running stats at init (paper)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--show", type=int, default=10, help="copied tensors to list")
    common(t)
    t.set_defaults(func=_cmd_transfer)

    d = sub.add_parser("demo", help="rank a small pool, transfer from the nearest, check an exact copy")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=_cmd_demo)
    return p


def _version() -> str:
    from . import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "out", None) is not None and not str(args.out).endswith(".safetensors"):
        parser.error(f"--out must name a .safetensors file, got {args.out!r}")
    if getattr(args, "num_classes", 1) < 1:
        parser.error(f"--num-classes must be >= 1, got {args.num_classes}")
    try:
        result = args.func(args)
    except NasWarmstartError as e:
        print(f"nas-warmstart: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
