"""The few-shot table: pretrained encoders against builtin ones trained from scratch.

For each K (train clips per class) it makes AV-objects with ``streamer dataset avobjects``
(once; the test set is the same for every K), trains both models with ``streamer train``
and prints a Markdown table of test accuracy (all modalities and each alone) and the
seconds spent embedding and training, read from each checkpoint's ``config.json``.

    .venv/bin/python scripts/fewshot.py --root /tmp/fewshot --k 5,10,20,50

``--fresh`` empties each data set's embedding cache first, so the embedding time is a
first run's. Every command it runs is printed before it runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

PRETRAINED = "video=efficientnet-lite0,audio=silero-vad,text=wordllama"
MODELS = {"pretrained": ["--encoders", PRETRAINED], "builtin": []}
COLUMNS = ("video+audio+text", "video", "audio", "text")


def run(cmd: list[str], log: Path) -> None:
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.exit(f"{cmd[1]} {cmd[2]} failed (exit {done.returncode}); see {log}")


def metrics(checkpoint: Path) -> dict[str, Any]:
    config = json.loads((checkpoint / "config.json").read_text())
    m: dict[str, Any] = config["metrics"]
    return m


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", type=Path, required=True, help="data sets and checkpoints go here")
    p.add_argument("--k", default="5,10,20,50", help="train clips per class (default 5,10,20,50)")
    p.add_argument("--clips", type=int, default=10, help="test clips per class (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="empty each embedding cache first")
    p.add_argument("--fresh-seed", type=int, default=4711, help="the held-out test set's seed")
    args = p.parse_args()
    streamer = str(Path(sys.executable).with_name("streamer"))
    unseen = dataset(streamer, args.root / "avobj-fresh", 5, args.clips, args.fresh_seed, args)
    rows = []
    for k in (int(x) for x in args.k.split(",")):
        data = dataset(streamer, args.root / f"avobj-k{k}", k, args.clips, args.seed, args)
        for name, extra in MODELS.items():
            out = args.root / f"{name}-k{k}"
            run([streamer, "train", str(data), "--out", str(out), "--seed", str(args.seed),
                 *extra], args.root / f"{name}-k{k}.log")  # fmt: skip
            scored = args.root / f"{name}-k{k}.unseen.json"
            run([streamer, "eval", str(out), str(unseen), "--json", str(scored)],
                args.root / f"{name}-k{k}.eval.log")  # fmt: skip
            rows.append((k, name, metrics(out), json.loads(scored.read_text())))
    heads = [f"{c} (unseen)" for c in COLUMNS]
    print("| K | encoders | " + " | ".join(heads) + " | embedding s | training s |")
    print("|---|---|" + "---:|" * (len(COLUMNS) + 2))
    for k, name, m, fresh in rows:
        acc = " | ".join(f"{m['test_accuracy'][c] * 100:.1f} ({fresh[c] * 100:.1f})"
                         for c in COLUMNS)  # fmt: skip
        print(f"| {k} | {name} | {acc} | {m['seconds_embedding']:.0f} | "
              f"{m['seconds_training']:.0f} |")  # fmt: skip
    return 0


def dataset(streamer: str, data: Path, k: int, clips: int, seed: int, args: Any) -> Path:
    """AV-objects at ``data`` (made unless there), its embedding cache emptied on --fresh."""
    if not (data / "meta.json").is_file():
        run([streamer, "dataset", "avobjects", str(data), "--per-class", str(k),
             "--clips", str(clips), "--seed", str(seed)], data.with_suffix(".log"))  # fmt: skip
    if args.fresh:
        shutil.rmtree(data / ".cache", ignore_errors=True)
    return data


if __name__ == "__main__":
    raise SystemExit(main())
