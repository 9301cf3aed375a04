"""The ``streamer`` command line. Errors are one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from streamer import __version__
from streamer.errors import ConfigError, StreamerError

if TYPE_CHECKING:
    from streamer.app.node import Node
    from streamer.app.supervisor import Supervisor
    from streamer.cluster.controller import Controller


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("transitions", "amqtt", "asyncio", "aioice"):  # aioice: a line per check
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


# a closed terminal (SIGHUP) drains like Ctrl-C and a service manager's stop
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _until_signalled(node: Node | Supervisor | Controller) -> int:
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, node.stop)
    return await node.run()


def cmd_run(args: argparse.Namespace) -> int:
    from streamer.config import load_config, secret_warnings

    cfg = load_config(args.config, args.set or [])  # config errors before the heavy imports
    if args.engine == "ray":
        from streamer.cluster.plan import check_cluster_config

        check_cluster_config(cfg)
    _setup_logging(args.log_level or cfg.log_level)
    from streamer.malloc import limit_malloc_arenas

    limit_malloc_arenas()  # before the node's threads: RSS levels off instead of creeping
    from streamer.app.supervisor import Supervisor, parse_worker, share

    worker = None
    if args.worker is not None:  # one of --workers N, started by the supervisor
        worker, count = parse_worker(args.worker)
        cfg = share(cfg, worker, count)
    else:  # said once, by the process the user started
        for line in secret_warnings(cfg):
            logging.getLogger("streamer").warning("%s", line)
        from streamer.sources.factory import preflight

        preflight(cfg)  # what no retry would cure (a missing package...): exit 2 now
    if args.engine == "ray":
        if args.workers > 1 or worker is not None:
            raise ConfigError("--workers", "--engine ray places the streams itself (shards)")
        from streamer.cluster.controller import Controller

        return asyncio.run(_until_signalled(Controller(cfg, address=args.address)))
    if args.address is not None:
        raise ConfigError("--address", "names a Ray cluster: it needs --engine ray")
    if worker is None and args.workers > 1:
        supervisor = Supervisor(cfg, args.config, args.set or [], args.workers)
        return asyncio.run(_until_signalled(supervisor))
    from streamer.app.node import Node

    node = Node(cfg, worker=worker)
    if not node.loaded.trained:
        logging.getLogger("streamer").warning(
            "model %s is untrained: its predictions are not meaningful yet", node.loaded.id.name
        )
    return asyncio.run(_until_signalled(node))


def cmd_check(args: argparse.Namespace) -> int:
    from streamer.check import check

    _setup_logging(args.log_level or "warning")
    return asyncio.run(check(args.config, args.set or [], per_source_s=args.timeout))


def cmd_subscribe(args: argparse.Namespace) -> int:
    from streamer.subscribe import subscribe

    _setup_logging(args.log_level or "warning")
    return asyncio.run(
        subscribe(args.url, args.prefix, raw=args.json, count=args.count, seconds=args.timeout)
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from streamer.demo import demo

    _setup_logging(args.log_level or "warning")
    return asyncio.run(demo(duration=args.duration, streams=args.streams, port=args.port))


def cmd_train(args: argparse.Namespace) -> int:
    from streamer.training.commands import train_command

    _setup_logging(args.log_level or "warning")
    command = ["streamer", "train", args.data, "--out", args.out, "--seed", str(args.seed)]
    command += ["--epochs", str(args.epochs)] if args.epochs else []
    command += ["--quick"] if args.quick else []
    command += ["--device", args.device] if args.device != "auto" else []
    command += ["--freeze", ",".join(args.freeze)] if args.freeze else []
    encoders = dict(args.encoders)
    command += ["--encoders", ",".join(f"{m}={n}" for m, n in encoders.items())] if encoders else []
    command += ["--fusion", args.fusion] if args.fusion != "auto" else []
    return train_command(
        args.data, args.out, epochs=args.epochs, quick=args.quick, device=args.device,
        seed=args.seed, command=shlex.join(command), freeze=args.freeze, encoders=encoders,
        fusion=args.fusion,
    )  # fmt: skip


def cmd_eval(args: argparse.Namespace) -> int:
    from streamer.training.commands import eval_command

    _setup_logging(args.log_level or "warning")
    return eval_command(args.checkpoint, args.data, json_file=args.json, device=args.device)


def cmd_record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streamer.config import load_config
    from streamer.record import Recording, record

    _setup_logging(args.log_level or "warning")
    cfg = load_config(args.config, args.set or [])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rec = Recording(size=args.size, fps=args.fps, seconds=args.seconds, label=args.label)
    return asyncio.run(record(cfg, out, rec))


def cmd_dataset(args: argparse.Namespace) -> int:
    from streamer.datasets.avdigits.cli import main_dataset

    _setup_logging(args.log_level or "warning")
    return main_dataset(args.out, args.clips, args.seed)


def cmd_dataset_objects(args: argparse.Namespace) -> int:
    from streamer.datasets.avobjects.cli import main_dataset

    _setup_logging(args.log_level or "warning")
    return main_dataset(args.out, args.clips, args.seed, args.per_class)


def cmd_export(args: argparse.Namespace) -> int:
    from models.checkpoint import CheckpointFormatError
    from models.export import ExportError, export

    _setup_logging(args.log_level or "warning")
    try:
        paths = export(args.checkpoint, args.format, args.out)
    except (ExportError, CheckpointFormatError) as e:
        raise StreamerError(str(e)) from None
    for p in paths:
        print(p)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from streamer.contract import prediction_schema_text

    sys.stdout.write(prediction_schema_text())
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from streamer.bench.command import bench_command

    _setup_logging(args.log_level or "warning")
    return bench_command(args.json, args.device, args.quick)


def cmd_encoders(args: argparse.Namespace) -> int:
    from streamer.encoders_cmd import encoders_command

    return encoders_command()


def _positive_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
    return v


def _streams(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if not 1 <= v <= 64:
        raise argparse.ArgumentTypeError(f"must be 1..64, got {s}")
    return v


def _modalities(s: str) -> tuple[str, ...]:
    from models.encoders.registry import MODALITIES

    names = tuple(dict.fromkeys(n.strip() for n in s.split(",") if n.strip()))
    unknown = [n for n in names if n not in MODALITIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected modalities among {','.join(MODALITIES)}, got {s!r}"
        )
    return names


def _encoders(s: str) -> tuple[tuple[str, str], ...]:
    """``video=NAME,audio=NAME``: (modality, encoder name) pairs, each modality once."""
    from models.encoders.registry import MODALITIES

    pairs: dict[str, str] = {}
    for item in (i.strip() for i in s.split(",")):
        modality, eq, name = (part.strip() for part in item.partition("="))
        if not eq or modality not in MODALITIES or not name or modality in pairs:
            raise argparse.ArgumentTypeError(
                f"expected MODALITY=NAME pairs, each of {','.join(MODALITIES)} at most once "
                f"(e.g. video=onnx:/abs/model.onnx), got {item!r}"
            )
        pairs[modality] = name
    return tuple(pairs.items())


def _count(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="streamer", description="Real-time multimodal stream processor.")
    p.add_argument("--version", action="version", version=f"streamer {__version__}")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="run a config until SIGINT/SIGTERM or its sources end")
    r.add_argument("config")
    r.add_argument("--set", action="append", metavar="dotted.key=value", help="override a key")
    r.add_argument("--workers", type=_count, default=1,
                   help="split the streams over N processes (default 1)")  # fmt: skip
    r.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # I/N, set by --workers
    r.add_argument("--engine", choices=["node", "ray"], default="node",
                   help="node: this process (default); ray: shards on a Ray cluster")  # fmt: skip
    r.add_argument("--address", default=None,
                   help="--engine ray: the cluster (HOST:PORT, or auto; default RAY_ADDRESS "
                        "or a Ray of its own on this machine)")  # fmt: skip
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check", help="validate a config and open each source")
    c.add_argument("config")
    c.add_argument("--set", action="append", metavar="dotted.key=value")
    c.add_argument("--timeout", type=_positive_float, default=10.0, help="per source, seconds")
    c.set_defaults(func=cmd_check)

    d = sub.add_parser("demo", help="embedded broker + live synthetic streams + shipped model")
    d.add_argument(
        "--duration", type=_positive_float, default=None, help="seconds (default: until Ctrl-C)"
    )
    d.add_argument("--streams", type=_streams, default=2)
    d.add_argument("--port", type=int, default=None, help="broker port (default 1883 if free)")
    d.set_defaults(func=cmd_demo)

    rc = sub.add_parser("record", help="write what a config's streams capture as training clips")
    rc.add_argument("config")
    rc.add_argument("--set", action="append", metavar="dotted.key=value")
    rc.add_argument("--seconds", type=_positive_float, required=True, help="of captured time")
    rc.add_argument("--out", required=True, help="a clip folder, e.g. DATA/train")
    rc.add_argument("--label", default=None, help="label every clip (appended to labels.csv)")
    rc.add_argument("--size", type=_count, default=256, help="square frame size (default 256)")
    rc.add_argument("--fps", type=_count, default=10, help="frames per second (default 10)")
    rc.set_defaults(func=cmd_record)

    ds = sub.add_parser("dataset", help="generate a training data set")
    dsk = ds.add_subparsers(dest="kind", required=True, parser_class=_Parser)
    av = dsk.add_parser("avdigits", help="AV-digits: handwriting, speech and text of a digit")
    av.add_argument("out", help="output folder (train/ and test/ are written in it)")
    av.add_argument("--clips", type=_count, default=600, help="clips in all (default 600)")
    av.add_argument("--seed", type=int, default=0)
    av.set_defaults(func=cmd_dataset)
    ob = dsk.add_parser(
        "avobjects",
        help="AV-objects: 12 everyday objects (emoji drawings, photos), their spoken names, text",
        description="One 3 s clip per segment of one class. Train: --per-class clips of every "
        "class (a smaller K's clips are a prefix of a larger one's); test: --clips of every "
        "class, with pictures and voices train never uses, the same whatever --per-class is.",
    )
    ob.add_argument("out", help="output folder (train/ and test/ are written in it)")
    ob.add_argument("--clips", type=_count, default=10,
                    help="test clips per class (default 10)")  # fmt: skip
    ob.add_argument("--per-class", type=_count, default=20,
                    help="train clips per class (default 20)")  # fmt: skip
    ob.add_argument("--seed", type=int, default=0, help="same seed, same bytes (default 0)")
    ob.set_defaults(func=cmd_dataset_objects)

    t = sub.add_parser("train", help="train the fusion model on a clip folder")
    t.add_argument("data", help="a folder with train/ and test/ clip folders")
    t.add_argument("--out", required=True, help="the checkpoint directory to write")
    t.add_argument("--epochs", type=_count, default=None)
    t.add_argument("--quick", action="store_true", help="a few clips, five epochs (for tests)")
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--freeze",
        type=_modalities,
        default=(),
        metavar="MODALITIES",
        help="encoders to keep as initialised, e.g. video,audio (the rest trains)",
    )
    t.add_argument(
        "--encoders",
        type=_encoders,
        default=(),
        metavar="MODALITY=NAME,...",
        help="encoder names, e.g. video=onnx:/abs/model.onnx (the rest: builtin)",
    )
    t.add_argument(
        "--fusion",
        default="auto",
        choices=["auto", "attention", "late"],
        help="attention across modalities, or late: attention plus one vote per modality "
        "(default auto: late when an encoder is pretrained, attention otherwise)",
    )
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="accuracy per modality combination")
    e.add_argument("checkpoint")
    e.add_argument("data", help="a clip folder, or a folder holding test/")
    e.add_argument("--json", default=None, metavar="FILE", help='write {"<combo>": accuracy}')
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="export the encoders and the fusion step")
    x.add_argument("checkpoint", help="a checkpoint directory")
    x.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    x.add_argument("--out", default=None, help="output directory (default: a cache folder)")
    x.set_defaults(func=cmd_export)

    s = sub.add_parser("subscribe", help="print predictions as they arrive")
    s.add_argument("--url", default="mqtt://127.0.0.1:1883")
    s.add_argument("--prefix", default="streamer")
    s.add_argument("--json", action="store_true", help="print the raw JSON")
    s.add_argument("--count", type=int, default=None, help="exit after this many predictions")
    s.add_argument("--timeout", type=_positive_float, default=None, help="exit after seconds")
    s.set_defaults(func=cmd_subscribe)

    sc = sub.add_parser("schema", help="print the prediction JSON schema (for subscribers)")
    sc.set_defaults(func=cmd_schema)

    b = sub.add_parser("bench", help="the performance suite, measured on this machine")
    b.add_argument("--json", default=None, metavar="FILE", help="write the figures as JSON")
    b.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    b.add_argument("--quick", action="store_true", help="short phases (for tests; not figures)")
    b.set_defaults(func=cmd_bench)

    en = sub.add_parser("encoders", help="the encoders by name: package, licence, ms per item")
    en.set_defaults(func=cmd_encoders)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StreamerError as e:
        print(f"streamer: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
