"""The paper table's runner: :class:`PaperTableRunner` turns one plan (``protocol.build_plan``) into configured
pre-trainings and fine-tunes, runs them in this process (resumable; workers claim jobs one at a time), writes one
result per run, and dry-runs the whole plan without running it."""

from __future__ import annotations

import json
import os
import shutil
import time

from t3d_tools.experiments.bundle_runs import (
    bundle_parser,
    bundle_run_command,
    bundle_workflow,
    classification_metrics,
    pretrain_config_keys,
    segmentation_metrics,
)
from t3d_tools.experiments.dry_run import DryRunError, datalist_problems, resolve_problems, text_encoder_problems
from t3d_tools.experiments.logging_router import logged_to
from t3d_tools.experiments.protocol import PRETRAIN_BUNDLE, SCALES, Row, build_plan, bundle_by_name, row_by_name
from t3d_tools.experiments.results import result_path, write_result

__all__ = ["PaperTableRunner", "PRETRAIN_DONE"]

PRETRAIN_DONE = "pretrain_done.json"


class PaperTableRunner:
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
        own = set().union(*(pretrain_config_keys(c) for c in configs[len(self.spec["pretrain_configs"]) :]))
        scoped = [(k.rpartition(":"), v) for k, v in self.pretrain_overrides.items()]
        overrides.update({key: v for (name, _, key), v in scoped if not name and key not in own})
        overrides.update({key: v for (name, _, key), v in scoped if name == row.name})
        return configs, overrides

    def pretrain_backbone(self, row: Row) -> dict:
        """The ``image_backbone`` config a row pre-trains (scratch: T3D's, so every row has one architecture)."""
        configs, overrides = self.pretrain_config(row if row.pretrain else self.row("t3d"))
        parser = bundle_parser(PRETRAIN_BUNDLE, configs, overrides)
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
            if bundle.toy_miniature:
                overrides["prepare_data#miniature#num_cases"] = self.spec["miniature_cases"]
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
        with logged_to(os.path.join(self.out_dir, "logs", "prepare.log")):
            for row in self.plan["rows"]:
                if row["pretrain"]:
                    configs, overrides = self.pretrain_config(self.row(row["name"]))
                    bundle_parser(PRETRAIN_BUNDLE, configs, overrides).get_parsed_content("prepare_data")
            for bundle in self.plan["bundles"]:
                run = next(r for r in self.plan["runs"] if r["bundle"] == bundle["name"])
                parser = bundle_parser(bundle["name"], *self.finetune_config(run, None))
                if "prepare_data" in parser:
                    parser.get_parsed_content("prepare_data")
                parser.get_parsed_content("datalist")

    def pretrain(self, row_name: str) -> str:
        done = os.path.join(self.pretrain_dir(row_name), PRETRAIN_DONE)
        if os.path.isfile(done):
            return "exists"
        configs, overrides = self.pretrain_config(self.row(row_name))
        start, cpu_start = time.time(), time.process_time()
        with logged_to(os.path.join(self.out_dir, "logs", f"pretrain__{row_name}.log")):
            workflow = bundle_workflow(PRETRAIN_BUNDLE, configs, self.pretrain_dir(row_name), overrides)
            workflow.initialize()
            workflow.run()
            trainer = workflow.parser.get_parsed_content("train#trainer")
            steps = int(trainer.state.iteration)
            workflow.finalize()
        elapsed, cpu = time.time() - start, time.process_time() - cpu_start
        content = {
            "row": row_name,
            "command": bundle_run_command(
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
        with logged_to(os.path.join(self.out_dir, "logs", f"{run['run_id']}.log")):
            configs, overrides = self.finetune_config(run, weights)  # in here: MONAI's loggers bind to the router
            workflow = bundle_workflow(bundle.name, configs, None, overrides)
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
            bundle_run_command(bundle.name, configs, overrides),
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
            parser = bundle_parser(PRETRAIN_BUNDLE, configs, overrides)
            problems += resolve_problems(parser, f"{PRETRAIN_BUNDLE}[{row['name']}]")
            if self.scale == "toy":  # toy data is generated by the first run; only the configs are checked
                checked.append(f"{PRETRAIN_BUNDLE}[{row['name']}]")
                continue
            problems += datalist_problems(parser, f"{PRETRAIN_BUNDLE}[{row['name']}]", PRETRAIN_BUNDLE, self.scale)
            if parser.get("method", "t3d") == "t3d":
                problems += text_encoder_problems(parser, f"{PRETRAIN_BUNDLE}[{row['name']}]")
            checked.append(f"{PRETRAIN_BUNDLE}[{row['name']}]")
        seen = set()
        for run in self.plan["runs"]:
            if (run["row"], run["bundle"]) in seen:
                continue
            seen.add((run["row"], run["bundle"]))
            weights = self.weights_of(run["row"])
            configs, overrides = self.finetune_config(run, weights)
            parser = bundle_parser(run["bundle"], configs, overrides)
            where = f"{run['bundle']}[{run['row']}]"
            problems += resolve_problems(parser, where)
            if self.scale != "toy":
                problems += datalist_problems(parser, where, run["bundle"], self.scale)
            checked.append(where)
        unique = list(dict.fromkeys(problems))
        if unique:
            raise DryRunError(f"dry run ({self.scale}): {len(unique)} problem(s): " + "; ".join(unique))
        return checked
