"""The paper's comparison from one command: pre-train every row, fine-tune every downstream bundle at every label
fraction with several seeds, write one JSON per run, then the Markdown table and the plots.

    python -m t3d_tools.experiments.paper_table --scale toy --out results/toy --jobs 2
    python -m t3d_tools.experiments.paper_table --scale full --dry_run \
        --data_dir t3d_pretrain=/data/bimcv_vlp --data_dir t3d_btcv_seg=/data/BTCV \
        --data_dir t3d_msd_lung=/data/Task06_Lung --data_dir t3d_brats=/data/BraTS2021 \
        --pretrain_override text_encoder_name=/models/RadBERT-RoBERTa-4m \
        --pretrain_override clinicalbert:text_encoder_name=/models/ClinicalBERT
    python -m t3d_tools.experiments.paper_table --out results/toy --table_only

Every piece runs in this process through ``monai.bundle.ConfigWorkflow`` (the same objects ``python -m monai.bundle
run`` builds; each result records the equivalent command). Re-running the command resumes: a finished pre-training
(``work/pretrain/<row>/pretrain_done.json``) or fine-tune (``runs/<run_id>.json``) is not run again. ``--jobs N``
runs N worker processes that claim runs one at a time. The table is written only when every planned run is complete.
See ``docs/paper_table.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time

from t3d_tools.experiments.protocol import (
    BUNDLES_DIR,
    PRETRAIN_BUNDLE,
    REPO,
    SCALES,
    Row,
    build_plan,
    bundle_by_name,
    row_by_name,
)
from t3d_tools.experiments.results import (
    IncompleteResultsError,
    build_report,
    result_path,
    update_readme,
    write_result,
    write_timing,
)

__all__ = ["main", "Protocol", "DryRunError"]

PRETRAIN_DONE = "pretrain_done.json"


class DryRunError(RuntimeError):
    """A ``--dry_run`` found configs that do not resolve or data that is not there (one line says all of it)."""


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


def _cli_command(bundle: str, configs: list[str], overrides: dict) -> str:
    files = "[" + ",".join(f"'configs/{c}'" for c in configs) + "]"
    args = " ".join(f"--{k} {shlex.quote(v if isinstance(v, str) else json.dumps(v))}" for k, v in overrides.items())
    return f'cd bundles/{bundle} && python -m monai.bundle run --config_file "{files}" {args}'.strip()


class _Router(io.TextIOBase):
    """A stream that writes wherever ``target`` points now. Loggers that MONAI and ignite create during a run bind to
    ``sys.stdout`` as it is then; binding them to this router keeps them writing to the current run's log (and to
    the console between runs) instead of to a closed file."""

    def __init__(self) -> None:
        super().__init__()
        self.target = sys.stdout

    def write(self, text: str) -> int:
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return False


_ROUTER = _Router()


@contextlib.contextmanager
def _logged_to(path: str):
    """Send this process's logging, stdout and stderr to ``path`` while a run executes."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_streams = sys.stdout, sys.stderr
    with open(path, "a", encoding="utf-8") as log:
        handler = logging.StreamHandler(_ROUTER)
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
        root.handlers, root.level = [handler], logging.INFO
        _ROUTER.target = log
        sys.stdout = sys.stderr = _ROUTER
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved_streams
            _ROUTER.target = saved_streams[0]
            root.handlers, root.level = saved_handlers, saved_level


def _workflow(bundle: str, configs: list[str], bundle_root: str | None, overrides: dict):
    from monai.bundle import ConfigWorkflow

    config_dir = os.path.join(BUNDLES_DIR, bundle, "configs")
    kwargs = {"bundle_root": bundle_root} if bundle_root else {}
    return ConfigWorkflow(
        config_file=[os.path.join(config_dir, c) for c in configs],
        meta_file=os.path.join(config_dir, "metadata.json"),
        logging_file=False,
        workflow_type=None,
        **kwargs,
        **overrides,
    )


def _parser(bundle: str, configs: list[str], overrides: dict):
    from monai.bundle import ConfigParser

    config_dir = os.path.join(BUNDLES_DIR, bundle, "configs")
    parser = ConfigParser()
    parser.read_config([os.path.join(config_dir, c) for c in configs])
    parser.update(overrides)
    return parser


def segmentation_metrics(evaluator) -> tuple[dict, dict]:
    """``val_mean_dice`` and per-class means (NaN-skipping over cases) of a segmentation evaluator's last run;
    BraTS channels are TC, WT, ET (``custom.transforms.brats_labels.REGIONS``)."""
    import torch

    mean = float(evaluator.state.metrics["val_mean_dice"])
    details = evaluator.state.metric_details.get("val_mean_dice")
    per_class = (
        torch.nanmean(torch.as_tensor(details, dtype=torch.float64), dim=0).tolist() if details is not None else []
    )
    metrics = {"mean_dice": mean}
    if len(per_class) == 3:
        metrics.update(tc=per_class[0], wt=per_class[1], et=per_class[2])
    return metrics, {"per_class_dice": per_class}


def classification_metrics(evaluator) -> tuple[dict, dict]:
    """``macro_auroc``: the evaluator's first metric named like AUC / AUROC (the classification bundle's key metric)."""
    names = [k for k in evaluator.state.metrics if "auc" in k.lower() or "auroc" in k.lower()]
    if not names:
        raise KeyError(f"expected an AUROC metric in the evaluator's metrics, found {sorted(evaluator.state.metrics)}")
    return {"macro_auroc": float(evaluator.state.metrics[names[0]])}, {"all_metrics": dict(evaluator.state.metrics)}


class Protocol:
    """Runs (or dry-runs) one plan into ``out_dir``. ``data_dirs``: ``{bundle: dataset_dir}``; ``pretrain_overrides``:
    extra keys for every pre-training (e.g. a local ``text_encoder_name``); ``budget``: toy budget replacements."""

    def __init__(
        self,
        scale: str,
        out_dir: str,
        seeds: int | None = None,
        data_dirs: dict | None = None,
        pretrain_overrides: dict | None = None,
        rows: list[str] | None = None,
        bundles: list[str] | None = None,
        fractions: list[float] | None = None,
        budget: dict | None = None,
    ) -> None:
        self.scale = scale
        self.out_dir = os.path.abspath(out_dir)
        self.work = os.path.join(self.out_dir, "work")
        self.spec = {**SCALES[scale], **(budget or {})}
        if fractions:
            self.spec["fractions"] = tuple(float(f) for f in fractions)
        self.data_dirs = dict(data_dirs or {})
        self.pretrain_overrides = dict(pretrain_overrides or {})
        try:
            plan = build_plan(scale, seeds, self.spec["fractions"], rows, bundles)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        plan["budget"] = {k: v for k, v in self.spec.items() if k not in ("pretrain_configs", "finetune_configs")}
        plan["budget"].update(data_dirs=self.data_dirs, pretrain_cli_overrides=self.pretrain_overrides)
        self.plan = plan

    # ---- configuration of one pre-training / fine-tune ----------------------------------------------------------
    def row(self, name: str) -> Row:
        return row_by_name(name, self.scale)

    def pretrain_dir(self, row: str) -> str:
        return os.path.join(self.work, "pretrain", row)

    def pretrain_config(self, row: Row) -> tuple[list[str], dict]:
        configs = list(self.spec["pretrain_configs"])
        overrides = dict(self.spec["pretrain_overrides"])
        if self.scale == "toy":
            overrides.update(
                dataset_dir=self.data_dirs.get(PRETRAIN_BUNDLE, os.path.join(self.work, "data", "synthetic_pairs")),
                offline_text_encoder_dir=os.path.join(self.work, "text_encoder"),
            )
            if "pretrain_epoch_length" in self.spec:
                overrides["epoch_length"] = self.spec["pretrain_epoch_length"]
            if row.toy_overrides is not None:
                overrides.update(
                    {k: v.format(work=self.work) if isinstance(v, str) else v for k, v in row.toy_overrides.items()}
                )
            else:
                configs += list(row.overlays)
        else:
            configs += list(row.overlays)
            if PRETRAIN_BUNDLE in self.data_dirs:
                overrides["dataset_dir"] = self.data_dirs[PRETRAIN_BUNDLE]
        # KEY=VALUE applies to every row except one whose own overlay sets KEY (the overlay defines that ablation,
        # e.g. ClinicalBERT's text_encoder_name); ROW:KEY=VALUE applies to that row only, last
        own = set().union(*(_top_level_keys(c) for c in configs[len(self.spec["pretrain_configs"]) :]))
        scoped = [(k.rpartition(":"), v) for k, v in self.pretrain_overrides.items()]
        overrides.update({key: v for (name, _, key), v in scoped if not name and key not in own})
        overrides.update({key: v for (name, _, key), v in scoped if name == row.name})
        return configs, overrides

    def pretrain_backbone(self, row: Row) -> dict:
        """The ``image_backbone`` config a row pre-trains (scratch: T3D's, so every row has one architecture)."""
        configs, overrides = self.pretrain_config(row if row.pretrain else self.row("t3d"))
        parser = _parser(PRETRAIN_BUNDLE, configs, overrides)
        return dict(parser.get_parsed_content("image_backbone", instantiate=False).get_config())

    def downstream_network(self, row: Row, bundle: str) -> dict:
        """``network_def`` of a segmentation fine-tune: the MONAI network of the pre-training backbone's
        architecture."""
        backbone = self.pretrain_backbone(row)
        common = {"in_channels": "@in_channels", "out_channels": "@num_classes"}
        target = str(backbone["_target_"])
        if target.endswith("BasicUNetBackbone"):
            features = backbone.get("features", [32, 32, 64, 128, 256, 32])
            return {"_target_": "BasicUNet", "spatial_dims": 3, "features": list(features), **common}
        if target.endswith("SwinUNETRBackbone"):
            return {
                "_target_": "SwinUNETR",
                "feature_size": backbone.get("feature_size", 48),
                "use_checkpoint": True,
                **common,
            }
        raise ValueError(f"{bundle}: no downstream network known for pre-training backbone {target}")

    def finetune_config(self, run: dict, weights: str | None) -> tuple[list[str], dict]:
        bundle = bundle_by_name(run["bundle"])
        run_dir = os.path.join(self.work, "finetune", run["run_id"])
        overrides = {
            "label_fraction": run["fraction"],
            "seed": run["seed"],
            "pretrained_weights": weights,
            "ckpt_dir": os.path.join(run_dir, "models"),
            "output_dir": os.path.join(run_dir, "eval"),
        }
        row = self.row(run["row"])
        if bundle.task == "segmentation":
            overrides["network_def"] = self.downstream_network(row, bundle.name)
        else:  # the classifier wraps the backbone itself (``image_backbone``), with the downstream input channels
            overrides["image_backbone"] = {**self.pretrain_backbone(row), "in_channels": "@in_channels"}
        if bundle.name in self.data_dirs:
            overrides["dataset_dir"] = self.data_dirs[bundle.name]
        if self.scale == "toy":
            # the classification labels come from the pre-training studies' findings (BIMCV in the paper): same set
            shared = (
                self.pretrain_config(self.row("t3d"))[1]["dataset_dir"] if bundle.task == "classification" else None
            )
            overrides.setdefault("dataset_dir", shared or os.path.join(self.work, "data", bundle.name))
            if bundle.toy_datalist:
                overrides["datalist"] = bundle.toy_datalist.format(cases=self.spec["miniature_cases"])
            iterations = self.spec["finetune_iterations"]
            overrides.update(
                {"max_epochs": 1, "val_interval": 1, "train#trainer#epoch_length": iterations, "num_workers": 0}
            )
        return list(self.spec["finetune_configs"]), overrides

    def weights_of(self, row_name: str) -> str | None:
        return (
            os.path.join(self.pretrain_dir(row_name), "models", "image_encoder.pt")
            if self.row(row_name).pretrain
            else None
        )

    # ---- execution ------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Generate the toy data sets and local text encoders once, before workers start (idempotent)."""
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "plan.json")
        if os.path.isfile(path):  # resuming: finished runs are reused, so they must come from the same budget
            with open(path, encoding="utf-8") as f:
                earlier = json.load(f)
            same = lambda plan: json.dumps(  # noqa: E731
                [plan["scale"], {k: v for k, v in plan["budget"].items() if k not in ("seeds", "fractions")}],
                sort_keys=True,
            )
            if same(earlier) != same(self.plan):
                raise SystemExit(
                    f"{path}: written by a run with another scale or budget ({earlier['scale']}, {earlier['budget']}); "
                    f"its finished runs would be mixed with this one's: use another --out or remove {self.out_dir}"
                )
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.plan, f, indent=1)
        if self.scale != "toy":
            return
        with _logged_to(os.path.join(self.out_dir, "logs", "prepare.log")):
            for row in self.plan["rows"]:
                if row["pretrain"]:
                    configs, overrides = self.pretrain_config(self.row(row["name"]))
                    _parser(PRETRAIN_BUNDLE, configs, overrides).get_parsed_content("prepare_data")
            for bundle in self.plan["bundles"]:
                run = next(r for r in self.plan["runs"] if r["bundle"] == bundle["name"])
                parser = _parser(bundle["name"], *self.finetune_config(run, None))
                if "prepare_data" in parser:
                    parser.get_parsed_content("prepare_data")
                parser.get_parsed_content("datalist")

    def pretrain(self, row_name: str) -> str:
        done = os.path.join(self.pretrain_dir(row_name), PRETRAIN_DONE)
        if os.path.isfile(done):
            return "exists"
        configs, overrides = self.pretrain_config(self.row(row_name))
        start, cpu_start = time.time(), time.process_time()
        with _logged_to(os.path.join(self.out_dir, "logs", f"pretrain__{row_name}.log")):
            workflow = _workflow(PRETRAIN_BUNDLE, configs, self.pretrain_dir(row_name), overrides)
            workflow.initialize()
            workflow.run()
            trainer = workflow.parser.get_parsed_content("train#trainer")
            steps = int(trainer.state.iteration)
            workflow.finalize()
        elapsed, cpu = time.time() - start, time.process_time() - cpu_start
        content = {
            "row": row_name,
            "command": _cli_command(
                PRETRAIN_BUNDLE, configs, {"bundle_root": self.pretrain_dir(row_name), **overrides}
            ),
            "config": {"files": configs, "overrides": overrides},
            "steps": steps,
            "elapsed_s": round(elapsed, 1),
            "cpu_s": round(cpu, 1),
            "weights": self.weights_of(row_name),
        }
        with open(done, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1)
        return f"{steps} steps in {elapsed:.1f} s ({cpu:.1f} s CPU)"

    def finetune(self, run: dict) -> str:
        if os.path.isfile(result_path(self.out_dir, run["run_id"])):
            return "exists"
        weights = self.weights_of(run["row"])
        if weights is not None and not os.path.isfile(weights):
            raise FileNotFoundError(
                f"{run['run_id']}: pre-trained weights {weights} not found "
                f"(pre-training of row {run['row']} not finished)"
            )
        run_dir = os.path.join(self.work, "finetune", run["run_id"])
        shutil.rmtree(run_dir, ignore_errors=True)  # a fine-tune does not resume: start an interrupted one afresh
        bundle = bundle_by_name(run["bundle"])
        start, cpu_start = time.time(), time.process_time()
        with _logged_to(os.path.join(self.out_dir, "logs", f"{run['run_id']}.log")):
            configs, overrides = self.finetune_config(run, weights)  # in here: MONAI's loggers bind to the router
            workflow = _workflow(bundle.name, configs, None, overrides)
            workflow.initialize()
            workflow.run()
            evaluator = workflow.parser.get_parsed_content("validate#evaluator")
            extract = segmentation_metrics if bundle.task == "segmentation" else classification_metrics
            metrics, details = extract(evaluator)
            iterations = int(workflow.parser.get_parsed_content("train#trainer").state.iteration)
            workflow.finalize()
        elapsed, cpu = time.time() - start, time.process_time() - cpu_start
        write_result(
            self.out_dir,
            run,
            metrics,
            _cli_command(bundle.name, configs, overrides),
            {"files": configs, "overrides": overrides},
            details=details,
            iterations=iterations,
            elapsed_s=round(elapsed, 1),
            cpu_s=round(cpu, 1),
            scale=self.scale,
            pretrain=self._pretrain_record(run["row"]),
        )
        return f"{elapsed:.1f} s ({cpu:.1f} s CPU), " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())

    def _pretrain_record(self, row_name: str) -> dict | None:
        path = os.path.join(self.pretrain_dir(row_name), PRETRAIN_DONE)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    def _claim(self, job: str) -> bool:
        """Atomically claim ``job`` for this process (workers share the claims folder)."""
        path = os.path.join(self.out_dir, "claims", job)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def run_phase(self, phase: str) -> None:
        """Run every not-yet-claimed job of ``phase`` (``pretrain`` or ``finetune``), printing one line per job."""
        jobs = [r["name"] for r in self.plan["rows"] if r["pretrain"]] if phase == "pretrain" else self.plan["runs"]
        for index, job in enumerate(jobs, 1):
            name = job if phase == "pretrain" else job["run_id"]
            if not self._claim(f"{phase}__{name}"):
                continue
            outcome = self.pretrain(job) if phase == "pretrain" else self.finetune(job)
            print(f"[{phase} {index}/{len(jobs)}] {name}: {outcome}", flush=True)

    # ---- dry run ----------------------------------------------------------------------------------------------
    def dry_run(self) -> list[str]:
        """Resolve every distinct config of the plan without running it; check datalists and text encoders exist.
        Returns the checked items; raises :class:`DryRunError` with one line naming everything missing."""
        problems, checked = [], []
        for row in self.plan["rows"]:
            if not row["pretrain"]:
                continue
            configs, overrides = self.pretrain_config(self.row(row["name"]))
            parser = _parser(PRETRAIN_BUNDLE, configs, overrides)
            problems += _resolve_problems(parser, f"{PRETRAIN_BUNDLE}[{row['name']}]")
            if self.scale == "toy":  # toy data is generated by the first run; only the configs are checked
                checked.append(f"{PRETRAIN_BUNDLE}[{row['name']}]")
                continue
            problems += _datalist_problems(parser, f"{PRETRAIN_BUNDLE}[{row['name']}]", PRETRAIN_BUNDLE, self.scale)
            if parser.get("method", "t3d") == "t3d":
                problems += _text_encoder_problems(parser, f"{PRETRAIN_BUNDLE}[{row['name']}]")
            checked.append(f"{PRETRAIN_BUNDLE}[{row['name']}]")
        seen = set()
        for run in self.plan["runs"]:
            if (run["row"], run["bundle"]) in seen:
                continue
            seen.add((run["row"], run["bundle"]))
            weights = self.weights_of(run["row"])
            configs, overrides = self.finetune_config(run, weights)
            parser = _parser(run["bundle"], configs, overrides)
            where = f"{run['bundle']}[{run['row']}]"
            problems += _resolve_problems(parser, where)
            if self.scale != "toy":
                problems += _datalist_problems(parser, where, run["bundle"], self.scale)
            checked.append(where)
        unique = list(dict.fromkeys(problems))
        if unique:
            raise DryRunError(f"dry run ({self.scale}): {len(unique)} problem(s): " + "; ".join(unique))
        return checked


def _top_level_keys(config_name: str) -> set[str]:
    with open(os.path.join(BUNDLES_DIR, PRETRAIN_BUNDLE, "configs", config_name), encoding="utf-8") as f:
        return set(json.load(f))


def _resolve_problems(parser, where: str) -> list[str]:
    """References that do not resolve and component targets that cannot be imported, in what ``run`` needs."""
    import pydoc

    from monai.bundle.config_item import ConfigComponent

    problems = []
    try:
        for key in ("initialize", "run"):
            if key in parser:
                parser.get_parsed_content(key, instantiate=False, eval_expr=False)
        parser.get_parsed_content("train#trainer", instantiate=False, eval_expr=False)
    except Exception as err:  # noqa: BLE001 - MONAI raises ValueError/KeyError; one line is what the user needs
        problems.append(f"{where}: config does not resolve ({str(err).splitlines()[0]})")
        return problems
    for key, item in parser.ref_resolver.items.items():
        if isinstance(item, ConfigComponent) and not item.is_disabled():
            name = item.resolve_module_name()
            if not isinstance(name, str) or "." not in name or pydoc.locate(name) is None:
                problems.append(f"{where}: component {key} target {item.get_config().get('_target_')!r} not importable")
    return problems


def _datalist_problems(parser, where: str, bundle: str, scale: str) -> list[str]:
    try:
        dataset_dir = parser.get_parsed_content("dataset_dir", lazy=False)  # re-parse: evaluate expressions this time
        datalist = parser.get_parsed_content("datalist")
    except Exception as err:  # noqa: BLE001
        return [f"{where}: datalist does not resolve ({str(err).splitlines()[0]})"]
    if not os.path.isfile(str(datalist)):
        hint = f" (pass --data_dir {bundle}=DIR)" if scale == "full" else ""
        return [f"{bundle} datalist not found: {datalist} (dataset_dir {dataset_dir}){hint}"]
    return []


def _text_encoder_problems(parser, where: str) -> list[str]:
    name = str(parser.get_parsed_content("text_encoder_name"))
    if os.path.isdir(name):
        return []
    if not name.startswith(("/", ".")) and name.count("/") == 1:
        try:
            from huggingface_hub import try_to_load_from_cache

            if isinstance(try_to_load_from_cache(name, "config.json"), str):
                return []
        except Exception:  # noqa: BLE001 - no hub library or a malformed id: treat as not cached
            pass
    return [
        f"{where}: text encoder {name!r} is neither a local folder nor in the Hugging Face cache "
        f"(--pretrain_override [ROW:]text_encoder_name=DIR)"
    ]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m t3d_tools.experiments.paper_table", description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="toy")
    p.add_argument("--seeds", type=int, default=None, help="fine-tune seeds per cell (default: the scale's, 3)")
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
    p.add_argument("--finetune_iterations", type=int, default=None, help="toy: iterations per fine-tune (default 30)")
    p.add_argument("--pretrain_epochs", type=int, default=None, help="toy: pre-training epochs (default 2 x 30 steps)")
    p.add_argument("--pretrain_epoch_length", type=int, default=None, help="toy: steps per pre-training epoch")
    p.add_argument("--worker", choices=["pretrain", "finetune"], default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _protocol(args: argparse.Namespace) -> Protocol:
    budget = {}
    if args.finetune_iterations:
        budget["finetune_iterations"] = args.finetune_iterations
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
    return Protocol(
        args.scale, args.out, args.seeds,
        data_dirs={k: str(v) for k, v in _key_values(args.data_dir, "--data_dir").items()},
        pretrain_overrides=_key_values(args.pretrain_override, "--pretrain_override"),
        rows=split(args.rows), bundles=split(args.bundles),
        fractions=[float(f) for f in split(args.fractions)] if args.fractions else None, budget=budget,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(argv)
    if args.table_only:
        return _report(args.out, "", args.readme)
    protocol = _protocol(args)
    if args.worker:
        protocol.run_phase(args.worker)
        return 0
    if args.dry_run:
        try:
            checked = protocol.dry_run()
        except DryRunError as err:
            print(err, file=sys.stderr)
            return 2
        print(f"dry run ({args.scale}): {len(checked)} configs resolve and their data is present: {', '.join(checked)}")
        return 0
    print(
        f"plan: {len(protocol.plan['rows'])} rows x {len(protocol.plan['bundles'])} bundles x "
        f"{len(protocol.plan['fractions'])} fractions x {protocol.plan['seeds']} seeds = "
        f"{len(protocol.plan['runs'])} fine-tunes"
    )
    for name, why in {**protocol.plan["skipped_rows"], **protocol.plan["skipped_bundles"]}.items():
        print(f"skipped {name}: {why}")
    start = time.time()
    protocol.plan["command"] = "python -m t3d_tools.experiments.paper_table " + shlex.join(argv)
    protocol.prepare()
    phase_wall = {}
    for phase in ("pretrain", "finetune"):
        shutil.rmtree(os.path.join(protocol.out_dir, "claims"), ignore_errors=True)  # claims of an interrupted run
        phase_start = time.time()
        if args.jobs <= 1:
            protocol.run_phase(phase)
        else:
            command = [sys.executable, "-m", "t3d_tools.experiments.paper_table", *argv, "--worker", phase]
            # each worker gets its share of the cores: N workers with all-core thread pools each thrash
            threads = str(max(1, (os.cpu_count() or 1) // args.jobs))
            env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            workers = [subprocess.Popen(command, cwd=REPO, env=env) for _ in range(args.jobs)]
            failed = [w.args for w in workers if w.wait() != 0]
            if failed:
                print(f"{phase}: {len(failed)} worker(s) failed; re-run the same command to resume", file=sys.stderr)
                return 1
        phase_wall[phase] = time.time() - phase_start
        print(f"{phase} phase: {phase_wall[phase]:.0f} s wall", flush=True)
    write_timing(protocol.out_dir, phase_wall["pretrain"], phase_wall["finetune"], args.jobs)
    return _report(protocol.out_dir, f"done in {math.ceil(time.time() - start)} s wall; ", args.readme)


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
