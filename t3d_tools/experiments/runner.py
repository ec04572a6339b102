"""The paper table's runner: :class:`PaperTableRunner` turns one plan (``protocol.build_plan``) into configured
pre-trainings (one per row and pre-training seed) and downstream runs, runs them in this process (resumable; workers
claim jobs one at a time), writes one result per run, and dry-runs the whole plan without running it.

A downstream run trains on the protocol datalist of its bundle (``work/splits/<bundle>.json``: the bundle's datalist
with a labelled, patient-disjoint ``test`` split, ``custom.data.test_split``), keeps the checkpoint best on
validation (the bundle's ``CheckpointSaver``), then scores that checkpoint on ``test`` with the bundle's own
``evaluate.json``: the test score is the result."""

from __future__ import annotations

import json
import os
import shutil
import time

from custom.data.test_split import write_test_split
from t3d_tools.experiments.bundle_runs import (
    bundle_parser,
    bundle_run_command,
    bundle_workflow,
    classification_metrics,
    pretrain_config_keys,
    segmentation_metrics,
    subset_auroc,
)
from t3d_tools.experiments.dry_run import DryRunError, datalist_problems, resolve_problems, text_encoder_problems
from t3d_tools.experiments.logging_router import logged_to
from t3d_tools.experiments.protocol import (
    MODES,
    PRETRAIN_BUNDLE,
    SCALES,
    Row,
    build_plan,
    build_registered_plan,
    bundle_by_name,
    load_protocol,
    plan_sha256,
    row_by_name,
)
from t3d_tools.experiments.results import result_path, write_result
from t3d_tools.experiments.statistics import binomial_tail

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
        pretrain_seeds: int | None = None,
        modes: list[str] | None = None,
        protocol: str | None = None,
        world: str | None = None,
    ) -> None:
        self.scale = scale
        self.out_dir = os.path.abspath(out_dir)
        self.work = os.path.join(self.out_dir, "work")
        self.spec = {**SCALES[scale], **(budget or {})}
        registered_t3d = (load_protocol(protocol)[0].get("t3d") or {}) if protocol else {}
        if registered_t3d.get("pretrain_configs"):  # the registered miniature of the shipped defaults (#26)
            self.spec["pretrain_configs"] = tuple(registered_t3d["pretrain_configs"])
        self.data_dirs = dict(data_dirs or {})
        self.pretrain_overrides = dict(pretrain_overrides or {})
        try:
            if protocol:  # the registered protocol fixes rows, bundles, modes and seeds: nothing else may change them
                if any(x is not None for x in (seeds, fractions, rows, bundles, pretrain_seeds, modes)):
                    raise ValueError(
                        f"{protocol}: a registered protocol fixes rows, bundles, modes, fractions and "
                        "seeds; drop --rows/--bundles/--modes/--fractions/--seeds/--pretrain_seeds"
                    )
                plan = build_registered_plan(scale, protocol, budget=budget)
            else:
                plan = build_plan(
                    scale, seeds, fractions, rows, bundles, pretrain_seeds=pretrain_seeds, modes=modes, budget=budget
                )
        except ValueError as err:
            raise SystemExit(str(err)) from None  # fmt: skip
        plan["budget"] = {k: v for k, v in self.spec.items() if k not in ("pretrain_configs", "finetune_configs")}
        plan["budget"].update(data_dirs=self.data_dirs, pretrain_cli_overrides=self.pretrain_overrides)
        #: the synthetic world the toy / gpu scales generate: the registered one unless ``world`` (an entry point
        #: ``module.function(out_dir, **kwargs) -> pairs datalist``) replaces its generator
        self.world = dict(plan.get("registered", {}).get("world") or {})
        if world:
            self.world["generator"] = world
        if self.world:
            plan["world"] = self.world
        self.plan = plan

    # ---- configuration of one pre-training / fine-tune ----------------------------------------------------------
    def row(self, name: str) -> Row:
        return row_by_name(name, self.scale)

    def pretrain_dir(self, row: str, pretrain_seed: int) -> str:
        return os.path.join(self.work, "pretrain", row, f"seed{pretrain_seed}")

    @property
    def plan_sha256(self) -> str:
        return plan_sha256(self.plan)

    @property
    def generated(self) -> bool:
        """Whether this scale generates its data (toy and gpu: synthetic) rather than reading ``--data_dir``."""
        return bool(self.spec.get("generated", self.scale == "toy"))

    def world_dir(self) -> str:
        return self.data_dirs.get(PRETRAIN_BUNDLE, os.path.join(self.work, "data", "world" if self.world else
                                                                "synthetic_pairs"))  # fmt: skip

    def pretrain_config(self, row: Row, pretrain_seed: int = 0) -> tuple[list[str], dict]:
        configs = list(self.spec["pretrain_configs"])
        overrides = {**self.spec["pretrain_overrides"], "seed": pretrain_seed}
        registered = self.plan.get("registered", {}).get("t3d", {})
        if registered.get("report_affinity"):  # the registered T3D: text affinity (image-only rows never read it)
            overrides["report_affinity"] = registered["report_affinity"]
        if self.generated:
            overrides.update(
                dataset_dir=self.world_dir(), offline_text_encoder_dir=os.path.join(self.work, "text_encoder")
            )
            if self.world:  # the world's generator writes the pairs (and the classification datalist) instead
                overrides["prepare_data#synthetic_pairs"] = {
                    "_target_": self.world["generator"],
                    "out_dir": "@dataset_dir",
                    **self.world.get("kwargs", {}),
                }
                overrides["oracle_labels_datalist"] = os.path.join(
                    self.world_dir(), self.world.get("classification_datalist", "classification_datalist.json")
                )
                overrides.update(self.world.get("pretrain_overrides", {}))
            if "pretrain_epoch_length" in self.spec:
                overrides["epoch_length"] = self.spec["pretrain_epoch_length"]
            if row.toy_overrides is not None and self.scale == "toy":
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
        architecture and normalisation."""
        backbone = self.pretrain_backbone(row)
        common = {"in_channels": "@in_channels", "out_channels": "@num_classes"}
        target = str(backbone["_target_"])
        # the pre-training's normalisation too: a batch-norm encoder in an instance-norm network would lose its
        # running statistics (the transfer refuses that)
        if target.endswith("BasicUNetBackbone"):
            features = backbone.get("features", [32, 32, 64, 128, 256, 32])
            norm = {"norm": backbone["norm"]} if "norm" in backbone else {}
            return {"_target_": "BasicUNet", "spatial_dims": 3, "features": list(features), **norm, **common}
        if target.endswith("SwinUNETRBackbone"):
            norm = {"norm_name": backbone["norm_name"]} if "norm_name" in backbone else {}
            return {
                "_target_": "SwinUNETR",
                "feature_size": backbone.get("feature_size", 48),
                "use_checkpoint": True,
                **norm,
                **common,
            }
        raise ValueError(f"{bundle}: no downstream network known for pre-training backbone {target}")

    def split_datalist(self, bundle: str) -> str:
        """The protocol datalist of ``bundle``: its datalist with a labelled, patient-disjoint ``test`` split."""
        return os.path.join(self.work, "splits", f"{bundle}.json")

    def finetune_config(self, run: dict, weights: str | None) -> tuple[list[str], dict]:
        bundle = bundle_by_name(run["bundle"])
        run_dir = os.path.join(self.work, "finetune", run["run_id"])
        overrides = {
            "label_fraction": run["fraction"],
            "seed": run["seed"],
            "pretrained_weights": weights,
            "ckpt_dir": os.path.join(run_dir, "models"),
            "output_dir": os.path.join(run_dir, "eval"),
            **MODES[run["mode"]][bundle.task],
        }
        row = self.row(run["row"])
        if bundle.task == "segmentation":
            overrides["network_def"] = self.downstream_network(row, bundle.name)
        else:  # the classifier wraps the backbone itself (``image_backbone``), with the downstream input channels
            overrides["image_backbone"] = {**self.pretrain_backbone(row), "in_channels": "@in_channels"}
        if bundle.name in self.data_dirs:
            overrides["dataset_dir"] = self.data_dirs[bundle.name]
        if self.generated:
            # the classification labels come from the pre-training studies' findings (BIMCV in the paper): same set
            shared = self.world_dir() if bundle.task == "classification" else None
            overrides.setdefault("dataset_dir", shared or os.path.join(self.work, "data", bundle.name))
            if shared and self.world:
                overrides["datalist"] = os.path.join(
                    shared, self.world.get("classification_datalist", "classification_datalist.json")
                )
            if bundle.toy_miniature:
                overrides["prepare_data#miniature#num_cases"] = self.spec["miniature_cases"]
            overrides.update(self._generated_schedule(bundle.name))
        if os.path.isfile(self.split_datalist(bundle.name)):  # written by ``prepare`` once the data exist
            overrides["datalist"] = self.split_datalist(bundle.name)
        overrides.update(self.spec.get("finetune_overrides", {}))
        return list(self.spec["finetune_configs"]), overrides

    def _generated_schedule(self, bundle: str) -> dict:
        """``validations`` epochs of equal length adding up to the bundle's fine-tune iterations, validating after
        each: the best of them is the checkpoint scored on test."""
        iterations = self.spec["finetune_iterations"]
        iterations = int(iterations[bundle] if isinstance(iterations, dict) else iterations)
        validations = max(1, min(int(self.spec.get("validations") or 1), iterations))
        return {
            "max_epochs": validations,
            "val_interval": 1,
            "train#trainer#epoch_length": iterations // validations,
            "num_workers": 0,
        }

    def weights_of(self, row_name: str, pretrain_seed: int | None) -> str | None:
        if not self.row(row_name).pretrain:
            return None
        return os.path.join(self.pretrain_dir(row_name, pretrain_seed), "models", "image_encoder.pt")

    # ---- execution ------------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Generate the toy data sets and local text encoders once, then every bundle's protocol datalist, before
        workers start (idempotent)."""
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, "plan.json")
        if os.path.isfile(path):  # resuming: finished runs are reused, so they must come from the same budget
            with open(path, encoding="utf-8") as f:
                earlier = json.load(f)
            if self.plan.get("protocol") == 3 and plan_sha256(earlier) != self.plan_sha256:
                raise SystemExit(
                    f"{path}: this run's plan differs from the one its finished runs were made under (plan sha256 "
                    f"{plan_sha256(earlier)[:12]} there, {self.plan_sha256[:12]} now: the registered protocol, the "
                    "budget or the arguments changed); plans are never edited after a run: use another --out"
                )
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
        with logged_to(os.path.join(self.out_dir, "logs", "prepare.log")):
            if self.generated:
                # the pre-training rows' data; the classifier's studies are T3D's pre-training pairs even without it
                rows = [r["name"] for r in self.plan["rows"] if r["pretrain"]]
                if "t3d" not in rows and any(
                    bundle_by_name(b["name"]).task == "classification" for b in self.plan["bundles"]
                ):
                    rows.append("t3d")
                for name in rows:
                    configs, overrides = self.pretrain_config(self.row(name))
                    bundle_parser(PRETRAIN_BUNDLE, configs, overrides).get_parsed_content("prepare_data")
            for bundle in self.plan["bundles"]:
                run = next(r for r in self.plan["runs"] if r["bundle"] == bundle["name"])
                parser = bundle_parser(bundle["name"], *self.finetune_config(run, None))
                if self.generated and "prepare_data" in parser:
                    parser.get_parsed_content("prepare_data")
                if not os.path.isfile(self.split_datalist(bundle["name"])):
                    write_test_split(
                        parser.get_parsed_content("datalist"),
                        self.split_datalist(bundle["name"]),
                        held_out_fraction=self.spec["test_fraction"],
                        test_source=bundle_by_name(bundle["name"]).test_source,
                    )

    def pretrain(self, row_name: str, pretrain_seed: int = 0) -> str:
        done = os.path.join(self.pretrain_dir(row_name, pretrain_seed), PRETRAIN_DONE)
        if os.path.isfile(done):
            return "exists"
        configs, overrides = self.pretrain_config(self.row(row_name), pretrain_seed)
        start, cpu_start = time.time(), time.process_time()
        root = self.pretrain_dir(row_name, pretrain_seed)
        with logged_to(os.path.join(self.out_dir, "logs", f"pretrain__{row_name}__pt{pretrain_seed}.log")):
            workflow = bundle_workflow(PRETRAIN_BUNDLE, configs, root, overrides)
            workflow.initialize()
            workflow.run()
            trainer = workflow.parser.get_parsed_content("train#trainer")
            steps = int(trainer.state.iteration)
            retrieval = self._retrieval(workflow.parser)
            workflow.finalize()
        elapsed, cpu = time.time() - start, time.process_time() - cpu_start
        content = {
            "row": row_name,
            "pretrain_seed": pretrain_seed,
            "command": bundle_run_command(PRETRAIN_BUNDLE, configs, {"bundle_root": root, **overrides}),
            "config": {"files": configs, "overrides": overrides},
            "steps": steps,
            "elapsed_s": round(elapsed, 1),
            "cpu_s": round(cpu, 1),
            "weights": self.weights_of(row_name, pretrain_seed),
            "retrieval": retrieval,
            "plan_sha256": self.plan_sha256,
        }
        with open(done, "w", encoding="utf-8") as f:
            json.dump(content, f, indent=1)
        return f"{steps} steps in {elapsed:.1f} s ({cpu:.1f} s CPU)"

    @staticmethod
    def _retrieval(parser) -> dict | None:
        """Held-out report→volume R@1 of the finished pre-training's last validation, its chance level, the number
        of validation studies and the one-sided binomial p of that many hits at chance (None: no text, no retrieval)."""
        validator = parser.get_parsed_content("validate#evaluator")
        if validator is None or "report_to_volume_R1" not in (validator.state.metrics or {}):
            return None
        r1, chance = float(validator.state.metrics["report_to_volume_R1"]), float(validator.state.metrics["chance_R1"])
        studies = len(parser.get_parsed_content("validate#rows"))
        hits = round(r1 * studies)
        return {"report_to_volume_R1": r1, "chance_R1": chance, "validation_studies": studies, "hits": hits,
                "binomial_p": binomial_tail(hits, studies, chance)}  # fmt: skip

    def finetune(self, run: dict) -> str:
        if os.path.isfile(result_path(self.out_dir, run["run_id"])):
            return "exists"
        weights = self.weights_of(run["row"], run["pretrain_seed"])
        if weights is not None and not os.path.isfile(weights):
            raise FileNotFoundError(
                f"{run['run_id']}: pre-trained weights {weights} not found "
                f"(pre-training of row {run['row']}, seed {run['pretrain_seed']} not finished)"
            )
        run_dir = os.path.join(self.work, "finetune", run["run_id"])
        shutil.rmtree(run_dir, ignore_errors=True)  # a fine-tune does not resume: start an interrupted one afresh
        bundle = bundle_by_name(run["bundle"])
        extract = segmentation_metrics if bundle.task == "segmentation" else classification_metrics
        start, cpu_start = time.time(), time.process_time()
        with logged_to(os.path.join(self.out_dir, "logs", f"{run['run_id']}.log")):
            configs, overrides = self.finetune_config(run, weights)  # in here: MONAI's loggers bind to the router
            workflow = bundle_workflow(bundle.name, configs, None, overrides)
            workflow.initialize()
            workflow.run()
            validator = workflow.parser.get_parsed_content("validate#evaluator")
            selected = {
                "best_validation": float(validator.state.best_metric),
                "epoch": validator.state.best_metric_epoch,
            }
            iterations = int(workflow.parser.get_parsed_content("train#trainer").state.iteration)
            workflow.finalize()
            # the checkpoint best on validation (``ckpt_dir/model.pt``), scored on the held-out test split
            test_overrides = {**overrides, "eval_split": "test", "output_dir": os.path.join(run_dir, "test")}
            if bundle.task == "classification":
                test_overrides["eval_bootstrap"] = 0  # the table's intervals are over seeds, not resamples
            test = bundle_workflow(bundle.name, [*configs, "evaluate.json"], None, test_overrides)
            test.initialize()
            test.run()
            metrics, details = extract(test.parser.get_parsed_content("validate#evaluator"))
            test.finalize()
            if bundle.task == "classification":
                metrics.update(subset_auroc(test_overrides["output_dir"], test_overrides.get("datalist"),
                                            self.world.get("subtle_key", "subtle_findings")))  # fmt: skip
        elapsed, cpu = time.time() - start, time.process_time() - cpu_start
        write_result(
            self.out_dir,
            run,
            metrics,
            bundle_run_command(bundle.name, configs, overrides),
            {"files": configs, "overrides": overrides},
            details=details,
            split="test",
            selected_checkpoint=selected,
            test_command=bundle_run_command(bundle.name, [*configs, "evaluate.json"], test_overrides),
            iterations=iterations,
            elapsed_s=round(elapsed, 1),
            cpu_s=round(cpu, 1),
            scale=self.scale,
            pretrain=self._pretrain_record(run["row"], run["pretrain_seed"]),
            plan_sha256=self.plan_sha256,
        )
        return f"{elapsed:.1f} s ({cpu:.1f} s CPU), test " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())

    def _pretrain_record(self, row_name: str, pretrain_seed: int | None) -> dict | None:
        if pretrain_seed is None:
            return None
        path = os.path.join(self.pretrain_dir(row_name, pretrain_seed), PRETRAIN_DONE)
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
        if phase == "pretrain":
            jobs = [
                (r["name"], seed)
                for seed in range(self.plan["pretrain_seeds"])
                for r in self.plan["rows"]
                if r["pretrain"] and any(run["row"] == r["name"] for run in self.plan["runs"])
            ]
        else:
            jobs = self.plan["runs"]
        for index, job in enumerate(jobs, 1):
            name = f"{job[0]}__pt{job[1]}" if phase == "pretrain" else job["run_id"]
            if not self._claim(f"{phase}__{name}"):
                continue
            outcome = self.pretrain(*job) if phase == "pretrain" else self.finetune(job)
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
            if self.generated:  # synthetic data is generated by the first run; only the configs are checked
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
            weights = self.weights_of(run["row"], run["pretrain_seed"])
            configs, overrides = self.finetune_config(run, weights)
            parser = bundle_parser(run["bundle"], configs, overrides)
            where = f"{run['bundle']}[{run['row']}]"
            problems += resolve_problems(parser, where)
            if not self.generated:
                problems += datalist_problems(parser, where, run["bundle"], self.scale)
            checked.append(where)
        unique = list(dict.fromkeys(problems))
        if unique:
            raise DryRunError(f"dry run ({self.scale}): {len(unique)} problem(s): " + "; ".join(unique))
        return checked
