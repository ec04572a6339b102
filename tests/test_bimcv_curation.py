"""BIMCV-VLP curation on the generated miniature BIMCV-COVID19 tree (no real data, no network).

Run with ``-s`` to see the timings of the first and the second (cached) curation run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from custom.data.integrity import verify_datalist
from custom.data.synthetic_ct import FINDING_NAMES, sample_findings
from custom.data.synthetic_reports import write_report
from custom.errors import DataError
from t3d_tools.curation.bimcv.curate import curate, curate_csv
from t3d_tools.curation.bimcv.labels import (
    build_class_list,
    canonical_terms,
    english_terms,
    label_english_report,
    parse_label_list,
)
from t3d_tools.curation.bimcv.miniature import make_miniature
from t3d_tools.curation.bimcv.reports import CachedTranslator, Seq2SeqTranslator, clean_report, split_sentences

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_POSITIVE = 2
SPLIT_ARGS = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0, "progress": False}
SPLITS = ("training", "validation", "test")


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _fingerprint(folder: str) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha1, mtime_ns)}`` of every file under ``folder``."""
    result = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = (hashlib.sha1(f.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return result


def _exclusions(out: str) -> list[dict]:
    with open(os.path.join(out, "exclusions.tsv"), encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


@pytest.fixture(scope="module")
def miniature(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bimcv") / "covid19_posi")
    return root, make_miniature(root, seed=0)


@pytest.fixture(scope="module")
def curated(miniature, tmp_path_factory):
    """Two curation runs into the same folder, with the volumes each loaded and converted (the expensive work) and
    the output fingerprints after each."""
    import t3d_tools.curation.bimcv.records as records
    import t3d_tools.curation.bimcv.sources as sources

    root, truth = miniature
    out = str(tmp_path_factory.mktemp("bimcv_vlp"))
    runs = []

    def counted(work, function, name):
        def call(*args, **kwargs):
            work[name] += 1
            return function(*args, **kwargs)

        return call

    for _ in range(2):
        work = Counter()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(records, "probe_volume", counted(work, records.probe_volume, "loaded"))
            patch.setattr(sources, "convert_dicom_series", counted(work, sources.convert_dicom_series, "converted"))
            summary = curate(root, out, translation="column:Report_en", min_positive=MIN_POSITIVE, **SPLIT_ARGS)
        runs.append({"work": work, "summary": summary, "files": _fingerprint(out)})
    return out, truth, runs


def _included_rows(out: str, name: str = "pairs_datalist.json") -> dict[str, dict]:
    datalist = _load(os.path.join(out, name))
    return {row["study_id"]: {**row, "split": split} for split in SPLITS for row in datalist[split]}


def test_each_planted_defect_is_excluded_with_its_reason_and_nowhere_else(curated):
    out, truth, _ = curated
    exclusions = _exclusions(out)
    pairs, classification = _included_rows(out), _included_rows(out, "classification_datalist.json")
    assert len(truth["defects"]) == 10
    for defect, study_id in truth["defects"].items():
        reasons = {e["reason"] for e in exclusions if e["study_id"] == study_id}
        assert reasons == {truth["studies"][study_id]["status"]}, (defect, reasons)
        assert study_id not in pairs and study_id not in classification, defect
    expected_included = {s for s, info in truth["studies"].items() if info["status"] == "included"}
    assert set(pairs) == expected_included == set(classification)
    # the only exclusions of included studies are their unused series (an X-ray, the thicker second CT series)
    for e in exclusions:
        if e["study_id"] in expected_included:
            assert e["level"] == "series" and e["reason"] in {"not CT", "not selected"}, e


def test_one_volume_per_study_takes_the_series_with_most_slices(curated):
    out, truth, _ = curated
    row = _included_rows(out)[truth["two_series_study"]]
    assert row["series"] == truth["selected_series"]
    assert os.path.isfile(os.path.join(out, row["image"]))  # image paths are relative to the datalist folder


def test_splits_are_patient_level_and_the_outputs_pass_the_integrity_checker(curated):
    out, truth, _ = curated
    rows = _included_rows(out).values()
    splits_of = {}
    for row in rows:
        splits_of.setdefault(row["patient_id"], set()).add(row["split"])
    assert all(len(found) == 1 for found in splits_of.values()), splits_of
    assert len(splits_of[truth["multi_session_patient"]]) == 1
    assert sum(r["patient_id"] == truth["multi_session_patient"] for r in rows) == 3
    assert {r["split"] for r in rows} == set(SPLITS)
    pairs_keys = {"image", "report", "patient_id", "study_id", "labels", "label_vector"}
    assert all(pairs_keys <= set(row) for row in rows)
    for name in ("pairs_datalist.json", "classification_datalist.json", "classification_datalist_frac1.json"):
        assert verify_datalist(os.path.join(out, name)) == [], name


def test_class_list_and_multi_hot_vectors_match_the_ground_truth(curated):
    out, truth, runs = curated
    included = {s: info for s, info in truth["studies"].items() if info["status"] == "included"}
    counts = Counter(name for info in included.values() for name in set(info["findings"]))
    expected_classes = sorted((n for n, c in counts.items() if c >= MIN_POSITIVE), key=lambda n: (-counts[n], n))
    pairs = _load(os.path.join(out, "pairs_datalist.json"))
    classes = pairs["finding_names"]
    print(f"\nminiature: {len(classes)} classes with >= {MIN_POSITIVE} positive studies: {classes}")
    assert pairs["finding_names"] == expected_classes
    assert 0 < len(expected_classes) < len(counts)  # the threshold is exercised: some terms are too rare
    assert _load(os.path.join(out, "classification_datalist.json"))["class_names"] == expected_classes
    assert runs[0]["summary"]["classes"] == len(expected_classes)
    for study_id, row in _included_rows(out).items():
        findings = set(included[study_id]["findings"])
        assert sorted(row["all_labels"]) == sorted(findings)  # synonyms mapped, case folded, meta labels dropped
        assert row["label_vector"] == [int(name in findings) for name in expected_classes]
    for study_id, row in _included_rows(out, "classification_datalist.json").items():
        assert row["label"] == [int(name in included[study_id]["findings"]) for name in expected_classes]


def test_reports_are_cleaned_and_english(curated):
    out, _, _ = curated
    for row in _included_rows(out).values():
        for noise in ("INFORME", "[NOMBRE]", "/2020"):
            assert noise not in row["report_es"]
        sentences = [s for s in row["report_es"].split(". ") if s]
        assert len(sentences) == len(set(sentences))  # repeated sentences removed
        assert row["report_chars_clean"] < row["report_chars_raw"]
    stats = _load(os.path.join(out, "stats.json"))
    assert stats["report_chars_clean"]["mean"] < stats["report_chars_raw"]["mean"]
    assert stats["studies"] == len(_included_rows(out))
    for plot in ("stats_volumes.png", "stats_reports.png", "stats_labels.png"):
        with open(os.path.join(out, plot), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_label_fractions_are_nested_and_stable_for_a_seed(curated, miniature, tmp_path):
    out, _, _ = curated
    patients = {}
    for percent in ("1", "10", "100"):
        document = _load(os.path.join(out, f"classification_datalist_frac{percent}.json"))
        patients[percent] = {row["patient_id"] for row in document["training"]}
    assert patients["1"] and patients["1"] <= patients["10"] <= patients["100"]
    train = _load(os.path.join(out, "classification_datalist.json"))["training"]
    assert patients["100"] == {row["patient_id"] for row in train}
    other = str(tmp_path / "again")
    curate(miniature[0], other, translation="column:Report_en", min_positive=MIN_POSITIVE, **SPLIT_ARGS)
    for name in ("classification_datalist_frac1.json", "classification_datalist_frac10.json", "pairs_datalist.json"):
        first, again = _load(os.path.join(out, name)), _load(os.path.join(other, name))
        for split in SPLITS:  # image paths differ (relative to each output folder); the selection must not
            assert [(r["study_id"], r["label_vector"]) for r in first[split]] == [
                (r["study_id"], r["label_vector"]) for r in again[split]
            ], (name, split)


def test_second_run_changes_nothing_and_redoes_no_work(curated):
    _, truth, (first, second) = curated
    print(f"\ncuration of the miniature: first run {dict(first['work'])}, second run {dict(second['work'])}")
    assert second["summary"]["written"] == []
    assert second["files"] == first["files"]  # same bytes and same modification times: nothing rewritten
    # what made the first run slow is skipped: no volume loaded again (cache/probes.json), no DICOM series converted
    assert first["work"]["loaded"] >= len([s for s in truth["studies"].values() if s["status"] == "included"])
    assert second["work"] == Counter()


def test_dry_run_lists_decisions_and_writes_nothing(miniature, tmp_path, capsys):
    root, truth = miniature
    out = str(tmp_path / "dry")
    summary = curate(root, out, translation="column:Report_en", dry_run=True, **SPLIT_ARGS)
    printed = capsys.readouterr().out
    assert not os.path.exists(out)
    included = [s for s, info in truth["studies"].items() if info["status"] == "included"]
    assert summary["studies"] == len(included)
    for study_id in included:
        assert f"include\t{study_id}\t" in printed
    for study_id in truth["defects"].values():
        assert f"exclude\t{study_id}\t" in printed and truth["studies"][study_id]["status"] in printed


def test_missing_or_unknown_column_is_a_one_line_error(miniature, tmp_path):
    root, _ = miniature
    with pytest.raises(DataError, match=r"labels_covid_posi\.tsv: expected column 'Texto' \(option 'report'\)"):
        curate(root, str(tmp_path / "o"), translation="identity", columns={"report": "Texto"}, dry_run=True)
    with pytest.raises(DataError, match="expected option names"):
        curate(root, str(tmp_path / "o"), translation="identity", columns={"reports": "Report"}, dry_run=True)


def test_labels_column_normalisation_and_meta_label_rule():
    cell = "['Pleural Effusion', 'normal', 'pulmonary nodule', 'exclude', ' nodule ', 'COVID-19']"
    raw = parse_label_list(cell, "cell")
    assert canonical_terms(raw) == ["pleural effusion", "nodule", "covid 19"]
    assert canonical_terms(parse_label_list("['normal', 'unchanged']", "cell")) == []
    assert parse_label_list("", "cell") == [] and parse_label_list("emphysema, mass", "cell") == ["emphysema", " mass"]
    with pytest.raises(DataError, match="row 7 Labels: expected a list string"):
        parse_label_list("['nodule'", "row 7 Labels")
    assert build_class_list([["a", "b"], ["a"], ["a", "c"], ["b"]], min_positive=2) == ["a", "b"]


def test_english_labeler_handles_negation_and_uncertainty():
    status = label_english_report(
        "No pleural effusion. Possible small nodule in the right upper lobe. The heart is enlarged. "
        "Consolidation cannot be excluded. There is no mass, but a liver lesion is seen. Emphysema is absent."
    )
    assert status == {
        "pleural effusion": "negative",
        "nodule": "uncertain",
        "cardiomegaly": "positive",
        "consolidation": "uncertain",
        "mass": "negative",
        "hepatic lesion": "positive",
        "emphysema": "negative",
    }
    assert english_terms("Possible nodule. No effusion.", uncertain_as="negative") == []
    assert english_terms("Possible nodule. No effusion.", uncertain_as="positive") == ["nodule"]


def test_english_labeler_recovers_every_synthetic_report_finding():
    rng = np.random.default_rng(1)
    for _ in range(300):
        findings = sample_findings(rng)
        found = set(english_terms(write_report(findings, rng), uncertain_as="negative")) & set(FINDING_NAMES)
        assert found == {f.name for f in findings}


def test_bimcv_r_csv_route_uses_the_same_vocabulary(curated, tmp_path):
    out, truth, _ = curated
    rows = list(_included_rows(out).values())
    csv_path = tmp_path / "bimcv_r.csv"
    with open(csv_path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "Report_en"])
        for row in rows:
            writer.writerow([os.path.relpath(os.path.join(out, row["image"]), tmp_path), row["report"]])
        missing = os.path.relpath(os.path.join(out, rows[0]["image"]), tmp_path).replace(".nii.gz", "_x.nii.gz")
        writer.writerow([missing, "Nodule."])
        writer.writerow([os.path.relpath(os.path.join(out, rows[1]["image"]), tmp_path), "  "])
        writer.writerow([os.path.relpath(os.path.join(out, rows[2]["image"]), tmp_path), "Cardiomegaly."])
    csv_out = str(tmp_path / "csv_out")
    summary = curate_csv(str(csv_path), csv_out, min_positive=MIN_POSITIVE, uncertain_as="negative", **SPLIT_ARGS)
    assert summary["studies"] == len(rows)
    assert sorted(e["reason"] for e in _exclusions(csv_out)) == ["duplicate study", "empty report", "unreadable image"]
    curated_rows = _included_rows(csv_out)
    for study_id, row in curated_rows.items():
        assert set(row["all_labels"]) & set(FINDING_NAMES) == set(truth["studies"][study_id]["findings"])
    assert verify_datalist(os.path.join(csv_out, "pairs_datalist.json")) == []


def _tiny_marian(folder: str, seed: int = 0) -> str:
    """A randomly initialised 1-layer MarianMT and a word-level tokenizer, saved locally (no download).

    The initialisation is seeded (without touching the global torch RNG): an unseeded model sometimes decodes every
    sentence to special tokens only, i.e. to empty English, and the curation then rightly excludes every study."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    words = ["<pad>", "</s>", "<unk>", "derrame", "pleural", "derecho", "nódulo", "sin", "hallazgos", "."]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    config = MarianConfig(
        vocab_size=len(words),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MarianMTModel(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


class _CountingTranslator:
    """Wraps a translator and records every sentence it was asked to translate."""

    def __init__(self, inner) -> None:
        self.inner, self.name, self.seen = inner, inner.name, []

    def translate(self, texts):
        self.seen.extend(texts)
        return self.inner.translate(texts)


def test_marian_translation_is_cached_per_sentence(tmp_path):
    model = Seq2SeqTranslator(_tiny_marian(str(tmp_path / "marian")), max_new_tokens=6)
    cache = str(tmp_path / "translations.jsonl")
    reports = ["Derrame pleural derecho. Sin hallazgos.", "Sin hallazgos. Nódulo."]
    counting = _CountingTranslator(model)
    first = CachedTranslator(counting, cache, progress=False).translate(reports)
    assert len(first) == 2 and all(isinstance(t, str) for t in first)
    assert sorted(counting.seen) == ["Derrame pleural derecho.", "Nódulo.", "Sin hallazgos."]  # repeats once
    with open(cache, encoding="utf-8") as f:
        assert len(f.readlines()) == 3
    again = _CountingTranslator(model)
    reloaded = CachedTranslator(again, cache, progress=False)
    assert reloaded.translate(reports) == first and again.seen == [] and reloaded.misses == 0


def test_curate_with_a_local_marian_model_translates_once(miniature, tmp_path):
    root, truth = miniature
    model_dir = _tiny_marian(str(tmp_path / "marian"), seed=0)
    out = str(tmp_path / "out")
    first = curate(
        root,
        out,
        translation=model_dir,
        min_positive=MIN_POSITIVE,
        translation_batch_size=64,
        translation_max_new_tokens=8,
        **SPLIT_ARGS,
    )
    cache = os.path.join(out, "cache", "translations.jsonl")
    with open(cache, encoding="utf-8") as f:
        entries = [json.loads(line) for line in f]
    translation_of = {entry["source"]: entry["target"] for entry in entries}
    assert len(translation_of) == len(entries)  # every sentence reached the model once
    included = {s for s, info in truth["studies"].items() if info["status"] == "included"}
    rows = _included_rows(out)
    # the seeded model gives every report some English: all included studies are kept, none is "empty translation"
    assert set(rows) == included and first["studies"] == len(included)
    assert not [e for e in _exclusions(out) if e["reason"] == "empty translation"]
    spanish_sentences = {s for row in rows.values() for s in split_sentences(row["report_es"])}
    assert set(translation_of) == spanish_sentences  # exactly the kept reports' sentences were translated
    for row in rows.values():  # each report is its sentences' cached translations, in order
        assert row["report"] == " ".join(translation_of[s] for s in split_sentences(row["report_es"])).strip()
        assert any(ch.isalnum() for ch in row["report"])
    before = _fingerprint(out)
    second = curate(
        root, out, translation=model_dir, min_positive=MIN_POSITIVE, translation_max_new_tokens=8, **SPLIT_ARGS
    )
    assert second["written"] == [] and _fingerprint(out) == before  # nothing translated or written again


class _BlankingTranslator:
    """Identity, except that the given sentences translate to nothing ("") or to punctuation only (".")."""

    name = "blanking"

    def __init__(self, blank: set[str]) -> None:
        self.blank = blank

    def translate(self, texts):
        return [("" if i % 2 == 0 else " . ") if t in self.blank else t for i, t in enumerate(texts)]


def test_a_report_translated_to_nothing_is_excluded_and_counted(miniature, tmp_path):
    root, truth = miniature
    reference = str(tmp_path / "identity")
    curate(root, reference, translation="identity", min_positive=MIN_POSITIVE, **SPLIT_ARGS)
    spanish = {sid: row["report_es"] for sid, row in _included_rows(reference).items()}
    target = sorted(spanish)[0]
    blank = set(split_sentences(spanish[target]))
    expected_empty = {sid for sid, text in spanish.items() if set(split_sentences(text)) <= blank}
    assert target in expected_empty and len(expected_empty) < len(spanish)

    out = str(tmp_path / "out")
    summary = curate(root, out, translation=_BlankingTranslator(blank), min_positive=MIN_POSITIVE, **SPLIT_ARGS)
    empty = [e for e in _exclusions(out) if e["reason"] == "empty translation"]
    assert {e["study_id"] for e in empty} == expected_empty and len(empty) == len(expected_empty)
    assert all(e["level"] == "study" and "expected English text" in e["detail"] for e in empty)
    assert set(_included_rows(out)) == set(spanish) - expected_empty
    stats = _load(os.path.join(out, "stats.json"))
    assert stats["exclusions_by_reason"]["empty translation"] == len(expected_empty)
    assert stats["studies"] == summary["studies"] == len(spanish) - len(expected_empty)
    assert _load(os.path.join(out, "pairs_datalist.json"))["source"]["translation"] == "blanking"


def test_a_sessions_row_without_an_image_is_excluded_and_counted(miniature, curated, tmp_path):
    root, truth = miniature
    tree = str(tmp_path / "covid19_posi")
    shutil.copytree(root, tree)
    subject = truth["multi_session_patient"]
    sessions_tsv = os.path.join(tree, subject, f"{subject}_sessions.tsv")
    with open(sessions_tsv, "a", encoding="utf-8") as f:
        f.write("ses-E99998\t20200401\tTC\n")  # listed, but no image folder and no report row
    with open(sessions_tsv, encoding="utf-8") as f:
        appended_line = len(f.readlines())
    lonely = "sub-S99999"  # a subject whose only session never arrived: a sessions table and nothing else
    os.makedirs(os.path.join(tree, lonely))
    lonely_tsv = os.path.join(tree, lonely, f"{lonely}_sessions.tsv")
    with open(lonely_tsv, "w", encoding="utf-8") as f:
        f.write("session_id\tstudy_date\tmedical_evaluation\nses-E99999\t20200402\tTC\n")
    out = str(tmp_path / "out")
    curate(tree, out, translation="column:Report_en", min_positive=MIN_POSITIVE, **SPLIT_ARGS)
    exclusions = _exclusions(out)
    sessions = {e["study_id"]: e for e in exclusions if e["level"] == "session"}
    assert sessions == {
        f"{subject}_ses-E99998": {
            "study_id": f"{subject}_ses-E99998",
            "patient_id": subject,
            "level": "session",
            "path": f"{sessions_tsv}:{appended_line}",
            "reason": "no image",
            "detail": f"{sessions_tsv}:{appended_line}: expected image series under {subject}/ses-E99998, found none",
        },
        f"{lonely}_ses-E99999": {
            "study_id": f"{lonely}_ses-E99999",
            "patient_id": lonely,
            "level": "session",
            "path": f"{lonely_tsv}:2",
            "reason": "no image",
            "detail": f"{lonely_tsv}:2: expected image series under {lonely}/ses-E99999, found none",
        },
    }
    reference = _load(os.path.join(curated[0], "stats.json"))  # the same tree without the two rows
    stats = _load(os.path.join(out, "stats.json"))
    assert stats["exclusions_by_reason"]["no image"] == reference["exclusions_by_reason"].get("no image", 0) + 2
    assert stats["exclusions"] == reference["exclusions"] + 2 and stats["studies"] == reference["studies"]
    # the planted defects keep exactly their own reason: a session already excluded otherwise gets no second line
    for study_id in truth["defects"].values():
        assert {e["reason"] for e in exclusions if e["study_id"] == study_id} == {truth["studies"][study_id]["status"]}
        assert sum(e["study_id"] == study_id and e["level"] == "session" for e in exclusions) == 0


def test_a_non_utf8_csv_is_one_line_naming_the_file_and_offset(tmp_path):
    csv_path = tmp_path / "latin1.csv"
    text = "path,Report_en\nsub-S1_ses-E1_ct.nii.gz,Derrame pleural.\nsub-S2_ses-E2_ct.nii.gz,Nódulo.\n"
    csv_path.write_bytes(text.encode("latin-1"))
    offset = text.encode("latin-1").index("ó".encode("latin-1"))
    expected = (
        f"{csv_path}: expected UTF-8 text, found byte 0xf3 at offset {offset} (line 3); re-encode the whole "
        "file as UTF-8"
    )
    with pytest.raises(DataError) as caught:
        curate_csv(str(csv_path), str(tmp_path / "out"), progress=False)
    assert str(caught.value) == expected
    assert not os.path.exists(tmp_path / "out")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "t3d_tools.curation.bimcv",
            "curate_csv",
            "--csv_path",
            str(csv_path),
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: {expected}"
    # a UTF-8 file with a byte-order mark (Excel's "CSV UTF-8") reads its first column name correctly
    csv_path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    summary = curate_csv(str(csv_path), str(tmp_path / "bom"), dry_run=True, progress=False)
    assert summary == {"dry_run": True, "studies": 0, "exclusions": 2}  # both images are absent: excluded, no error


def test_report_cleaning_rules():
    text = (
        "INFORME TC TÓRAX:  Fecha: 03/05/2020. Paciente [NOMBRE] XXXX.  Derrame   pleural. Derrame pleural. "
        "Sin nódulos."
    )
    assert clean_report(text) == "Paciente. Derrame pleural. Sin nódulos."


def test_command_line_help():
    result = subprocess.run(
        [sys.executable, "-m", "t3d_tools.curation.bimcv", "curate", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "--min_positive" in result.stdout + result.stderr
