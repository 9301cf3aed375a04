"""Write the shipped default checkpoint: ``python -m models.make_reference [DIR]``.

Weights come from ``torch.manual_seed(0)`` and are untrained (``"trained": false``);
the same torch version writes the same bytes, so the version digest is reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from models.checkpoint import default_checkpoint_dir, save_checkpoint
from models.fusion import FusionModel
from models.spec import ModelSpec


def make_reference(directory: Path | None = None) -> Path:
    torch.manual_seed(0)
    model = FusionModel(ModelSpec())
    out = directory or default_checkpoint_dir()
    save_checkpoint(
        model,
        out,
        trained=False,
        extra={"data": "none: random initialisation from torch.manual_seed(0), untrained"},
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = make_reference(Path(args[0]) if args else None)
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
