"""Which pooled report vector says what a report says: ``[CLS]`` or the mean of the token states?

    python benchmarks/text_pooling_probe.py --out results/text_pooling/probe.json

A masked-LM encoder (RadBERT-RoBERTa is one, and so is the offline stand-in the CPU checks build) never trains its
first token to summarise the text: masked-LM has no sentence-level objective. This script measures what each
``text_pooling`` of ``custom.networks.text_encoder.HFTextEncoder`` carries about a report's findings, as the stand-in
of ``configs/cpu_size.json`` builds it (8 layers, 128 positions, world-v2 corpus): eval-mode pooled vectors of
``--reports`` seeded world-v2 reports, standardised per dimension, a ridge probe fitted on the first half and scored
(AUROC per finding) on the second half. It also prints the mean cosine between the raw pooled vectors of different
reports (near 1: every report looks alike to an untrained projection). Seconds of CPU once the stand-in exists
(building it takes a few minutes; ``--text_encoder`` reuses one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
BUNDLE = os.path.join(REPO, "bundles", "t3d_pretrain")


def standin_arguments() -> dict:
    """The stand-in's build arguments as ``configs/cpu_size.json`` states them (corpus and sizes)."""
    with open(os.path.join(BUNDLE, "configs", "cpu_size.json"), encoding="utf-8") as f:
        spec = json.load(f)["prepare_data"]["offline_text_encoder"]
    return {k: v for k, v in spec.items() if k not in ("_target_", "out_dir", "corpus")}


def ridge_probe_auroc(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> list:
    """Per-column test AUROC of a ridge regression (strength 10) from standardised features to 0/1 labels."""
    from custom.evaluation.classification_metrics import roc_auc

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    design = [np.c_[(x - mean) / std, np.ones(len(x))] for x in (train_x, test_x)]
    weights = np.linalg.solve(design[0].T @ design[0] + 10.0 * np.eye(design[0].shape[1]), design[0].T @ train_y)
    scores = design[1] @ weights
    return [float(roc_auc(test_y[:, j], scores[:, j])) for j in range(test_y.shape[1])]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--text_encoder", default=None, help="a built stand-in (folder); built in a temp dir if unset")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from custom.data.synthetic_world import world_report_corpus
    from custom.data.world_findings import WORLD_FINDINGS, sample_study
    from custom.data.world_reports import write_world_report
    from custom.networks.text_encoder import HFTextEncoder
    from custom.weights.offline_text_encoder import build_offline_text_encoder

    torch.set_num_threads(2)
    folder = args.text_encoder
    if folder is None:
        folder = os.path.join(tempfile.mkdtemp(prefix="t3d_pooling_"), "standin")
        build_offline_text_encoder(folder, corpus=world_report_corpus(), **standin_arguments())
    rng = np.random.default_rng([args.seed, 11])  # not the corpus stream ([seed, 3]): held-out report draws
    studies = [sample_study(rng) for _ in range(args.reports)]
    reports = [write_world_report(s, rng) for s in studies]
    labels = np.asarray([s.label_vector() for s in studies], dtype=float)
    half = args.reports // 2
    result = {
        "reports": args.reports,
        "seed": args.seed,
        "findings": list(WORLD_FINDINGS),
        "standin": standin_arguments(),
    }
    for pooling in ("cls", "mean"):
        vectors = HFTextEncoder(folder, pooling=pooling).eval_pooled(reports).numpy()
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        cosine = unit @ unit.T
        aurocs = ridge_probe_auroc(vectors[:half], labels[:half], vectors[half:], labels[half:])
        result[pooling] = {
            "mean_cosine_between_reports": float(cosine[~np.eye(len(unit), dtype=bool)].mean()),
            "probe_auroc": dict(zip(WORLD_FINDINGS, aurocs)),
            "probe_macro_auroc": float(np.mean(aurocs)),
            "probe_min_auroc": float(np.min(aurocs)),
        }
        print(
            f"{pooling:>4}: mean cosine between reports {result[pooling]['mean_cosine_between_reports']:.3f}; "
            f"probe AUROC macro {np.mean(aurocs):.3f}, min {np.min(aurocs):.3f} "
            f"({', '.join(f'{n} {a:.2f}' for n, a in zip(WORLD_FINDINGS, aurocs))})"
        )
    result["command"] = "python benchmarks/text_pooling_probe.py --out results/text_pooling/probe.json"
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
