"""``python -m motifpipe <stage> ...``: one sub-command per pipeline stage.

User mistakes (:class:`MotifpipeError`, missing files, malformed JSON) print one
line and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from motifpipe.errors import MotifpipeError

log = logging.getLogger("motifpipe")


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _job(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, help="task name (config key under tasks:)")
    p.add_argument("--n", type=int, required=True, help="total sample size")
    p.add_argument("--seed", type=int, required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="motifpipe", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True, metavar="<stage>")

    p = sub.add_parser("init-tracking", help="create the MLflow store, experiment, parent run")
    p.add_argument("--config", type=_json, required=True, help="validated config (JSON)")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("generate", help="draw a data set")
    _job(p)
    p.add_argument("--params", type=_json, required=True, help="the task's config (JSON)")
    p.add_argument("--val", type=float, default=0.2)
    p.add_argument("--test", type=float, default=0.2)
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("fit-baseline", help="fit the convex baseline (the kernel arm)")
    _job(p)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--params", type=_json, required=True, help="config['baseline'] (JSON)")
    p.add_argument("--tracking", type=Path, required=True)
    p.add_argument("--out-model", type=Path, required=True)
    p.add_argument("--out-json", type=Path, required=True)

    p = sub.add_parser("transfer", help="turn the baseline into a network")
    _job(p)
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--params", type=_json, required=True, help="config['transfer'] (JSON)")
    p.add_argument("--tracking", type=Path, required=True)
    p.add_argument("--out-net", type=Path, required=True)
    p.add_argument("--out-json", type=Path, required=True)

    p = sub.add_parser("train", help="retrain arms with Lightning (one MLflow run each)")
    _job(p)
    p.add_argument("--arm", required=True, action="append",
                   choices=["mimicry", "scratch", "mlp", "deepsets"],
                   help="an arm to train; repeat to train several in this process")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--baseline", type=Path, required=True)
    p.add_argument("--network", type=Path, help="transferred network (mimicry, scratch)")
    p.add_argument("--params", type=_json, required=True,
                   help="train settings per arm (JSON: {arm: config['train'] merged})")
    p.add_argument("--mlp", type=_json, default={}, help="config['mlp'] (JSON)")
    p.add_argument("--deepsets", type=_json, default={}, help="config['deepsets'] (JSON)")
    p.add_argument("--tracking", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", type=Path, required=True,
                   help="writes <arm>.safetensors, <arm>.curve.csv, <arm>.json here")

    p = sub.add_parser("evaluate", help="join job results into summary.csv")
    p.add_argument("results", type=Path, nargs="+", help="per-job result JSON files")
    p.add_argument("--config", type=_json, default=None,
                   help="validated config (JSON): adds each task's family and swept value")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser("report", help="figures and the HTML report")
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--curves", type=Path, nargs="*", default=[],
                   help="learning curves (none for a baselines-only study)")
    p.add_argument("--tracking", type=Path, required=True)
    p.add_argument("--config", type=_json, required=True)
    p.add_argument("--heatmap-dir", type=Path, action="append", default=[],
                   help="a job directory (data, baseline, train/mimicry) to draw as a heatmap; "
                        "repeat for several")
    p.add_argument("--out-html", type=Path, required=True)
    p.add_argument("--out-slopes", type=Path, required=True, help="fitted rates (CSV)")
    p.add_argument("--fig-dir", type=Path, required=True)
    return parser


def dispatch(args: argparse.Namespace) -> None:
    from motifpipe import stages

    wc = {"task": args.task, "n": args.n, "seed": args.seed} if hasattr(args, "task") else {}
    if args.stage == "init-tracking":
        stages.run_init_tracking(args.config, args.out)
    elif args.stage == "generate":
        stages.run_generate(args.task, args.params, args.n, args.seed, args.val, args.test,
                            args.out)
    elif args.stage == "fit-baseline":
        stages.run_fit_baseline(args.data, args.params, args.tracking, wc,
                                args.out_model, args.out_json)
    elif args.stage == "transfer":
        stages.run_transfer(args.baseline, args.data, args.params, args.tracking, wc,
                            args.out_net, args.out_json)
    elif args.stage == "train":
        needs = [a for a in args.arm if a in ("mimicry", "scratch")]
        if needs and args.network is None:
            raise MotifpipeError(f"train --arm {needs[0]} needs --network (the transferred net)")
        nets = {"mlp": args.mlp, "deepsets": args.deepsets}
        stages.run_train(args.arm, args.data, args.baseline, args.network, args.params,
                         nets, args.tracking, wc, args.threads, args.out_dir)
    elif args.stage == "evaluate":
        stages.run_evaluate(args.results, args.out, args.config)
    elif args.stage == "report":
        stages.run_report(args.summary, args.curves, args.tracking, args.config,
                          args.heatmap_dir, args.out_html, args.out_slopes, args.fig_dir)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    # Progress to stdout (the job log); stderr stays for the one-line error.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stdout)
    # The exact command, so that a job can be re-run by hand from its log.
    log.info("python -m motifpipe %s", shlex.join(argv))
    try:
        dispatch(args)
    except MotifpipeError as exc:
        print(f"motifpipe {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"motifpipe {args.stage}: error: file not found: {exc.filename}", file=sys.stderr)
        return 2
    return 0
