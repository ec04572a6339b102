"""Curate BIMCV-VLP from a BIMCV-COVID19 tree (or a BIMCV-R style CSV): pairs, classification set, exclusions, stats.

    python -m t3d_tools.curation.bimcv curate --root /data/BIMCV-COVID19/covid19_posi --out /data/bimcv_vlp
    python -m t3d_tools.curation.bimcv curate_csv --csv_path /data/BIMCV-R/reports.csv --out /data/bimcv_r_vlp

Outputs in ``out``::

    pairs_datalist.json            {"training", "validation", "test": [row], "finding_names": [class], "source": {...}}
                                   row: image (relative to out), report (English), patient_id, study_id, labels
                                   (class terms), label_vector (multi-hot over finding_names), all_labels, ...
    classification_datalist.json   {"training", "validation", "test", "class_names", "finding_names"}
                                   row: image, label (multi-hot), label_vector, labels, patient_id, study_id
    classification_datalist_frac{1,10,100}.json   nested patient-level label fractions of "training"
    exclusions.tsv                 study_id, patient_id, level (series/study/report), path, reason, detail
    stats.json, stats_volumes.png, stats_reports.png, stats_labels.png
    cache/probes.json, cache/translations.jsonl   what makes re-runs cheap

Image paths are relative to ``out`` and point into ``root`` (nothing is copied); DICOM series converted to NIfTI go
to ``out/images``. Splits are patient-level: the sorted patient ids are permuted with ``seed`` and the first
``test_fraction`` go to test, the next ``val_fraction`` to validation, the rest to training.

Re-runs: a volume is loaded again only when its file size or modification time changed (``cache/probes.json``), a
sentence is translated only once (``cache/translations.jsonl``), and an output file is rewritten only when its
content changed, so a second run over the same inputs changes no file.

This module holds the two pipelines; their parts: :mod:`.records` (study and exclusion records, probe cache, patient
splits), :mod:`.sources` (the tree's tables, one volume per study, the CSV), :mod:`.pairing` (which images and
reports become studies), :mod:`.outputs` (datalists, exclusions, dry run) and :mod:`.stats` (statistics, plots).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tqdm import tqdm

from t3d_tools.curation.bimcv.outputs import print_dry_run, refuse_nothing_left, write_outputs
from t3d_tools.curation.bimcv.pairing import (
    csv_study,
    drop_empty_translations,
    exclude_unpaired,
    label_studies,
    pair_reports,
)
from t3d_tools.curation.bimcv.records import CuratedStudy, Exclusion, ProbeCache, patient_splits
from t3d_tools.curation.bimcv.reports import CachedTranslator, Translator, clean_report, make_translator
from t3d_tools.curation.bimcv.sources import MidsTree, read_csv_rows, read_ehr_results, read_tree
from t3d_tools.curation.bimcv.tables import BimcvColumns

__all__ = ["CuratedStudy", "Exclusion", "ProbeCache", "patient_splits", "curate", "curate_csv"]


def _curated_studies(tree: MidsTree) -> list[CuratedStudy]:
    """Steps 2-4: pair volumes with reports, exclude reports and sessions without images, parse the labels (the probe
    cache is saved once the pairing is done)."""
    kept = pair_reports(tree)
    exclude_unpaired(tree)
    tree.probes.save()
    return label_studies(tree, kept)


def _english_reports(
    tree: MidsTree,
    studies: list[CuratedStudy],
    translation: str | Translator,
    out: str,
    progress: bool,
    batch_size: int,
    max_new_tokens: int,
    device: str,
) -> list[str]:
    """Step 5: the English report of each study, from the translated column or the (cached) translator."""
    if tree.translated_column:
        return [clean_report(tree.reports[s.study_id].values[tree.translated_column]) for s in studies]
    translator = (
        make_translator(translation, batch_size=batch_size, max_new_tokens=max_new_tokens, device=device)
        if isinstance(translation, str)
        else translation
    )
    cached = CachedTranslator(translator, os.path.join(out, "cache", "translations.jsonl"), progress)
    return cached.translate([s.extra["report_es"] for s in studies], batch_size=batch_size)


def _write_mids_outputs(
    tree: MidsTree,
    out: str,
    studies: list[CuratedStudy],
    translation: str | Translator,
    min_positive: int,
    min_slices: int,
    val_fraction: float,
    test_fraction: float,
    fractions: Sequence[float],
    seed: int,
) -> dict:
    """Step 7: the outputs, with the run's settings as ``source`` and the EHR test results in the stats."""
    source = {
        "kind": "bimcv-mids",
        "root": tree.root,
        "labels_tsv": tree.labels_tsv,
        "translation": translation if isinstance(translation, str) else translation.name,
        "min_positive": min_positive,
        "min_slices": min_slices,
        "seed": seed,
    }
    ehr = read_ehr_results(tree.root, tree.columns)
    exclusions, participants = tree.exclusions, tree.participants
    return write_outputs(
        out, studies, exclusions, min_positive, val_fraction, test_fraction, fractions, seed, source, participants, ehr
    )


def curate(
    root: str,
    out: str,
    translation: str | Translator = "Helsinki-NLP/opus-mt-es-en",
    labels_tsv: str = os.path.join("derivatives", "labels", "labels_covid_posi.tsv"),
    columns: dict | None = None,
    min_positive: int = 10,
    min_slices: int = 16,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    dry_run: bool = False,
    progress: bool = True,
    translation_batch_size: int = 16,
    translation_max_new_tokens: int = 256,
    device: str = "cpu",
) -> dict:
    """Curate a BIMCV-COVID19 MIDS tree at ``root`` into ``out`` (see the module docstring for the outputs).

    Args:
        root: the tree with ``participants.tsv`` and ``sub-*`` folders (e.g. ``.../covid19_posi``).
        out: output folder (created).
        translation: ``"identity"``, ``"column:<name>"`` (a translated column of the labels TSV) or a transformers
            seq2seq model id/path (default MarianMT Spanish -> English); from Python also a translator object
            (``name`` and ``translate(texts) -> texts``, see :mod:`t3d_tools.curation.bimcv.reports`). A report whose
            translation has no letter or digit is excluded as "empty translation".
        labels_tsv: the labels table, relative to ``root`` (BIMCV-COVID19-:
            ``derivatives/labels/Labels_covid_NEG_JAN21.tsv``).
        columns: column-name overrides, e.g. ``{"report": "Texto"}``
            (see :class:`~t3d_tools.curation.bimcv.tables.BimcvColumns`).
        min_positive: a term becomes a class with at least this many positive studies.
        min_slices: volumes with fewer slices along the third axis are excluded.
        val_fraction, test_fraction: patient fractions of the validation and test splits.
        fractions: label fractions of the classification training split.
        seed: seeds the patient splits and the label fractions.
        dry_run: print what would be included/excluded (nothing is written, nothing translated).
        progress: show progress bars.
        translation_batch_size, translation_max_new_tokens, device: for the translation model (per sentence).

    Returns:
        a summary: counts, and the output files written by this run (empty when nothing changed).
    """
    columns_config = BimcvColumns.from_overrides(columns)
    root, out = os.path.abspath(root), os.path.abspath(out)
    named = isinstance(translation, str)  # else a Translator object (``name`` and ``translate(texts)``)
    translated_column = translation[len("column:") :] if named and translation.startswith("column:") else None
    tree = read_tree(root, out, labels_tsv, columns_config, translated_column, min_slices, dry_run, progress)
    studies = _curated_studies(tree)
    if dry_run:
        print_dry_run(studies, tree.exclusions)
        return {"dry_run": True, "studies": len(studies), "exclusions": len(tree.exclusions)}
    english = _english_reports(
        tree, studies, translation, out, progress, translation_batch_size, translation_max_new_tokens, device
    )
    studies = drop_empty_translations(tree, studies, english)
    refuse_nothing_left(root, studies, tree.exclusions)
    return _write_mids_outputs(
        tree, out, studies, translation, min_positive, min_slices, val_fraction, test_fraction, fractions, seed
    )


def curate_csv(
    csv_path: str,
    out: str,
    image_column: str = "path",
    report_column: str = "Report_en",
    patient_column: str | None = None,
    min_positive: int = 10,
    min_slices: int = 16,
    uncertain_as: str = "positive",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    seed: int = 0,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Curate an already-paired BIMCV-R style CSV (image path + English report) into the same outputs as :func:`curate`.

    Image paths are relative to the CSV's folder (or absolute). The patient is ``patient_column`` when given, else the
    ``sub-*`` entity of the path, else the file name; the study is the ``sub-*_ses-*`` entities, else the file name.
    Labels come from the English labeler (:func:`~t3d_tools.curation.bimcv.labels.english_terms`), same vocabulary as
    the ``Labels`` route; ``uncertain_as`` decides uncertain mentions.
    """
    out = os.path.abspath(out)
    columns = (image_column, report_column, patient_column)
    rows = read_csv_rows(csv_path, columns)
    probes = ProbeCache(None if dry_run else os.path.join(out, "cache", "probes.json"))
    studies, exclusions, seen_content = [], [], {}
    for line, row in tqdm(rows, desc="probe images", unit="image", disable=not progress):
        found = csv_study(csv_path, line, row, columns, probes, min_slices, uncertain_as, seen_content)
        (studies if isinstance(found, CuratedStudy) else exclusions).append(found)
    probes.save()
    if dry_run:
        print_dry_run(studies, exclusions)
        return {"dry_run": True, "studies": len(studies), "exclusions": len(exclusions)}
    refuse_nothing_left(csv_path, studies, exclusions)
    source = {
        "kind": "bimcv-r-csv",
        "csv": os.path.abspath(csv_path),
        "uncertain_as": uncertain_as,
        "min_positive": min_positive,
        "min_slices": min_slices,
        "seed": seed,
    }
    return write_outputs(
        out, studies, exclusions, min_positive, val_fraction, test_fraction, fractions, seed, source, {}, {}
    )
