"""The paper's comparison from one command: pre-train every row, fine-tune every downstream bundle at every label
fraction with several seeds, write one JSON per run, then the Markdown table and the plots.

    python -m t3d_tools.experiments.paper_table --scale toy --out results/toy --jobs 2
    python -m t3d_tools.experiments.paper_table --scale full --dry_run \
        --data_dir t3d_pretrain=/data/bimcv_vlp --data_dir t3d_btcv_seg=/data/BTCV \
        --data_dir t3d_msd_lung=/data/Task06_Lung --data_dir t3d_brats=/data/BraTS2021 \
        --pretrain_override text_encoder_name=/models/RadBERT-RoBERTa-4m \
        --pretrain_override clinicalbert:text_encoder_name=/models/ClinicalBERT
    python -m t3d_tools.experiments.paper_table --out results/toy --table_only
    python -m t3d_tools.experiments.paper_table --protocol v3 --scale toy --out results/toy_v3 --jobs 2
    scripts/paper_table_gpu.sh      # --protocol v3 --scale gpu on one H100, <= 12 min

Every piece runs in this process through ``monai.bundle.ConfigWorkflow`` (the same objects ``python -m monai.bundle
run`` builds; each result records the equivalent command). Re-running the command resumes: a finished pre-training
(``work/pretrain/<row>/pretrain_done.json``) or fine-tune (``runs/<run_id>.json``) is not run again. ``--jobs N``
runs N worker processes that claim runs one at a time. The table is written only when every planned run is complete.
See ``docs/paper_table.md``.

This module is the command line only: it parses the arguments, builds a
:class:`~t3d_tools.experiments.runner.PaperTableRunner` and runs its phases (in workers with ``--jobs``), then reports.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

from t3d_tools import REPO_ROOT
from t3d_tools.experiments.dry_run import DryRunError
from t3d_tools.experiments.protocol import PROTOCOL_V3, SCALES
from t3d_tools.experiments.results import IncompleteResultsError, build_report, update_readme, write_timing
from t3d_tools.experiments.runner import PaperTableRunner

__all__ = ["main"]


def _key_values(pairs: list[str] | None, what: str) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise SystemExit(f"{what}: expected KEY=VALUE, found {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m t3d_tools.experiments.paper_table", description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="toy")
    p.add_argument("--seeds", type=int, default=None, help="fine-tune seeds per cell (default: the scale's, 3)")
    p.add_argument("--pretrain_seeds", type=int, default=None, help="pre-training seeds per row (default: 2)")
    p.add_argument("--modes", default=None, help="comma-separated subset of finetune,probe (default: both)")
    p.add_argument("--out", default="results", help="results folder (plan.json, runs/, work/, logs/, tables, plots)")
    p.add_argument("--dry_run", action="store_true", help="resolve every config and check data; run nothing")
    p.add_argument(
        "--table_only", action="store_true", help="only build the table/plots from --out (refuses if incomplete)"
    )
    p.add_argument(
        "--readme", default=None, help="also write the table into this README's Results block (between markers)"
    )
    p.add_argument("--jobs", type=int, default=1, help="worker processes (each runs one job at a time)")
    p.add_argument("--data_dir", action="append", metavar="BUNDLE=DIR", help="dataset_dir of a bundle (repeatable)")
    p.add_argument(
        "--pretrain_override",
        action="append",
        metavar="[ROW:]KEY=VALUE",
        help="pre-training config override: every row (except one whose overlay sets KEY), or ROW only",
    )
    p.add_argument("--rows", default=None, help="comma-separated subset of rows (default: all)")
    p.add_argument(
        "--bundles", default=None, help="comma-separated subset of downstream bundles (default: all present)"
    )
    p.add_argument("--fractions", default=None, help="comma-separated label fractions (default: 0.01,0.1,1.0)")
    p.add_argument(
        "--finetune_iterations",
        type=int,
        default=None,
        help="toy: iterations of every downstream run (default: per bundle)",
    )
    p.add_argument("--validations", type=int, default=None, help="toy: validations per downstream run (default 3)")
    p.add_argument("--pretrain_epochs", type=int, default=None, help="toy: pre-training epochs (default 2 x 30 steps)")
    p.add_argument("--pretrain_epoch_length", type=int, default=None, help="toy: steps per pre-training epoch")
    p.add_argument(
        "--protocol",
        default=None,
        help="a registered protocol file (or 'v3' for t3d_tools/experiments/protocol_v3.json): its rows, bundles, "
        "modes and seeds, its contrasts and controls; refused if it or the plan changes after a run",
    )
    p.add_argument(
        "--world",
        default=None,
        metavar="MODULE.FUNCTION",
        help="toy/gpu: the synthetic world's generator, function(out_dir, **kwargs) -> pairs datalist (default: the "
        "registered protocol's)",
    )
    p.add_argument("--worker", choices=["pretrain", "finetune"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _runner(args: argparse.Namespace) -> PaperTableRunner:
    budget = {}
    if args.finetune_iterations:
        budget["finetune_iterations"] = args.finetune_iterations
    if args.validations:
        budget["validations"] = args.validations
    if args.pretrain_epochs:
        epochs = args.pretrain_epochs
        budget["pretrain_overrides"] = {
            **SCALES[args.scale]["pretrain_overrides"],
            "max_epochs": epochs,
            "val_interval": epochs,
        }
    if args.pretrain_epoch_length:
        budget["pretrain_epoch_length"] = args.pretrain_epoch_length
    split = lambda text: [t.strip() for t in text.split(",") if t.strip()] if text else None  # noqa: E731
    return PaperTableRunner(
        args.scale, args.out, args.seeds,
        data_dirs={k: str(v) for k, v in _key_values(args.data_dir, "--data_dir").items()},
        pretrain_overrides=_key_values(args.pretrain_override, "--pretrain_override"),
        rows=split(args.rows), bundles=split(args.bundles),
        fractions=[float(f) for f in split(args.fractions)] if args.fractions else None, budget=budget,
        pretrain_seeds=args.pretrain_seeds, modes=split(args.modes),
        protocol=PROTOCOL_V3 if args.protocol == "v3" else args.protocol, world=args.world,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.table_only:
        return _report(args.out, "", args.readme)
    runner = _runner(args)
    if args.worker:
        runner.run_phase(args.worker)
        return 0
    if args.dry_run:
        try:
            checked = runner.dry_run()
        except DryRunError as err:
            print(err, file=sys.stderr)
            return 2
        print(f"dry run ({args.scale}): {len(checked)} configs resolve and their data is present: {', '.join(checked)}")
        return 0
    print(
        f"plan: {len(runner.plan['rows'])} rows ({runner.plan['pretrain_seeds']} pre-training seeds each) x "
        f"{len(runner.plan['bundles'])} bundles x modes {runner.plan['modes']} x {runner.plan['seeds']} fine-tuning "
        f"seeds = {len(runner.plan['runs'])} downstream runs"
    )
    for name, why in {**runner.plan["skipped_rows"], **runner.plan["skipped_bundles"]}.items():
        print(f"skipped {name}: {why}")
    start = time.time()
    runner.plan["command"] = "python -m t3d_tools.experiments.paper_table " + shlex.join(argv)
    runner.prepare()
    phase_wall = {}
    for phase in ("pretrain", "finetune"):
        shutil.rmtree(os.path.join(runner.out_dir, "claims"), ignore_errors=True)  # claims of an interrupted run
        phase_start = time.time()
        if args.jobs <= 1:
            runner.run_phase(phase)
        else:
            command = [sys.executable, "-m", "t3d_tools.experiments.paper_table", *argv, "--worker", phase]
            # each worker gets its share of the cores: N workers with all-core thread pools each thrash
            threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            workers = [subprocess.Popen(command, cwd=REPO_ROOT, env=env) for _ in range(args.jobs)]
            failed = [w.args for w in workers if w.wait() != 0]
            if failed:
                print(f"{phase}: {len(failed)} worker(s) failed; re-run the same command to resume", file=sys.stderr)
                return 1
        phase_wall[phase] = time.time() - phase_start
        print(f"{phase} phase: {phase_wall[phase]:.0f} s wall", flush=True)
    write_timing(runner.out_dir, phase_wall["pretrain"], phase_wall["finetune"], args.jobs)
    return _report(runner.out_dir, f"done in {math.ceil(time.time() - start)} s wall; ", args.readme)


def _report(out_dir: str, prefix: str, readme: str | None = None) -> int:
    """Build the table and plots (and the README block when asked); 2 with the one-line refusal when the results are
    incomplete."""
    try:
        table, plots = build_report(out_dir)
        if readme:
            update_readme(readme, out_dir)
    except IncompleteResultsError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"{prefix}table: {table}; plots: {', '.join(plots)}" + (f"; README block: {readme}" if readme else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
