"""Loss history of a run: a PNG of the curves next to the run and a printed first-vs-last summary."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
from ignite.engine import Engine, Events

from custom.distributed import is_main_process
from custom.engines.pretraining_trainer import step_terms

__all__ = ["TrainingCurves"]


class TrainingCurves:
    """Handler recording the step output's ``keys`` (``step_terms``) every iteration and validation metrics every
    evaluation. At each epoch end it rewrites ``<output_dir>/loss_history.json`` and ``loss_curves.png``; at the
    end it logs each loss's first-epoch and last-epoch mean. The history survives a resume (it is reloaded)."""

    def __init__(
        self, output_dir: str, keys: tuple[str, ...] = ("loss", "tcl", "tir"), evaluator: Engine | None = None
    ) -> None:
        self.output_dir = output_dir
        self.keys = keys
        self.evaluator = evaluator
        self.history: dict = {"iteration": [], "epoch": [], **{k: [] for k in keys}, "validation": []}
        self.logger = logging.getLogger(__name__)

    @property
    def history_path(self) -> str:
        return os.path.join(self.output_dir, "loss_history.json")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reload)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._record)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)
        engine.add_event_handler(Events.COMPLETED, self._summarise)

    def _reload(self, engine: Engine) -> None:
        if engine.state.iteration and os.path.isfile(self.history_path):  # resumed run: keep the earlier curve
            with open(self.history_path, encoding="utf-8") as f:
                self.history = json.load(f)

    def _record(self, engine: Engine) -> None:
        self.history["iteration"].append(engine.state.iteration)
        self.history["epoch"].append(engine.state.epoch)
        for key in self.keys:
            self.history[key].append(float(step_terms(engine.state.output)[key]))

    def _write(self, engine: Engine) -> None:
        if self.evaluator is not None and self.evaluator.state.metrics:
            self.history["validation"].append({"epoch": engine.state.epoch, **dict(self.evaluator.state.metrics)})
        if not is_main_process():
            return
        os.makedirs(self.output_dir, exist_ok=True)
        with open(self.history_path, "w", encoding="utf-8") as f:
            json.dump(self.history, f)
        self._plot()

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = len(self.keys) + (1 if self.history["validation"] else 0)
        fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2), squeeze=False)
        iterations = np.asarray(self.history["iteration"])
        for ax, key in zip(axes[0], self.keys):
            values = np.asarray(self.history[key])
            ax.plot(iterations, values, color="0.75", lw=0.8, label="per step")
            window = max(1, len(values) // 20)
            if len(values) >= window:
                smooth = np.convolve(values, np.ones(window) / window, mode="valid")
                ax.plot(iterations[window - 1 :], smooth, color="C0", label=f"mean of {window}")
            ax.set_title(key)
            ax.set_xlabel("iteration")
            ax.legend(fontsize=7)
        if self.history["validation"]:
            ax = axes[0][-1]
            epochs = [v["epoch"] for v in self.history["validation"]]
            for name in [k for k in self.history["validation"][-1] if k != "epoch"]:
                ax.plot(epochs, [v.get(name, np.nan) for v in self.history["validation"]], marker="o", label=name)
            ax.set_title("validation")
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(self.output_dir, "loss_curves.png"), dpi=100)
        plt.close(fig)

    def epoch_means(self, key: str) -> tuple[float, float]:
        """Mean of ``key`` over the first and over the last recorded epoch."""
        epochs = np.asarray(self.history["epoch"])
        values = np.asarray(self.history[key])
        return float(values[epochs == epochs.min()].mean()), float(values[epochs == epochs.max()].mean())

    def _summarise(self, engine: Engine) -> None:
        if not self.history["iteration"]:
            return
        for key in self.keys:
            first, last = self.epoch_means(key)
            self.logger.info(f"{key}: first-epoch mean {first:.4f} -> last-epoch mean {last:.4f}")
        if self.history["validation"]:
            self.logger.info(f"validation: {self.history['validation'][-1]}")
