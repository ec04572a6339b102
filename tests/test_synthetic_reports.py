"""Synthetic radiology reports: the long (realistic) style's length, negation share, consistency with the ground-truth
findings, determinism and compatibility with the report cleaning; the short style pinned to its original output."""

from __future__ import annotations

import re

import numpy as np
import pytest

from custom.data.synthetic_ct import FINDING_NAMES, Finding, sample_findings
from custom.data.synthetic_reports import report_corpus, write_report
from custom.transforms.report_text import clean_report, split_sentences

NUM_STUDIES = 300

# A sentence is a "negated/normal statement" when it has one of these words (word-bounded, case-insensitive):
# negation cues (no, not, without) and normal-anatomy words (normal, unremarkable, clear, patent, intact).
NEGATED_OR_NORMAL = re.compile(r"\b(?:no|not|without|normal|unremarkable|clear|patent|intact)\b", re.I)
NEGATION_CUE = re.compile(r"\b(?:no|not|without)\b", re.I)
# how each finding is named in text (its name or a synonym)
KEYWORD = {
    "nodule": r"\bnodules?\b",
    "mass": r"\bmass(?:es)?\b",
    "pleural effusion": r"\bpleural effusions?\b",
    "consolidation": r"\bconsolidation\b",
    "emphysema": r"\bemphysema(?:tous)?\b",
    "cardiomegaly": r"\bcardiomegaly\b|\bheart is enlarged\b|\benlarged heart\b|\benlargement of the heart\b",
    "hepatic lesion": r"\b(?:liver|hepatic)\b[^.]*\blesion\b|\blesion\b[^.]*\bliver\b",
    "renal cyst": r"\brenal cysts?\b|\bcysts?\b[^.]*\bkidney\b",
}
NORMAL_HEART = re.compile(r"heart is normal in size|heart size is normal|heart is not enlarged", re.I)
HEADERS = re.compile(r"^(?:TECHNIQUE|FINDINGS|IMPRESSION): ")


def positive_mention(sentence: str, name: str) -> bool:
    """The sentence names the finding with no negation cue before (or inside) the name."""
    match = re.search(KEYWORD[name], sentence, re.I)
    return bool(match) and not NEGATION_CUE.search(sentence[: match.end()])


def negated_mention(sentence: str, name: str) -> bool:
    """The sentence names the finding after a negation cue ("no", "not", "without"), or says the heart is normal."""
    if name == "cardiomegaly" and NORMAL_HEART.search(sentence):
        return True
    match = re.search(KEYWORD[name], sentence, re.I)
    return bool(match) and bool(NEGATION_CUE.search(sentence[: match.end()]))


def sections(report: str) -> dict[str, list[str]]:
    """Sentences per section (headers removed)."""
    out: dict[str, list[str]] = {"TECHNIQUE": [], "FINDINGS": [], "IMPRESSION": []}
    current = "TECHNIQUE"
    for sentence in split_sentences(report):
        header = HEADERS.match(sentence)
        if header:
            current = header.group(0)[:-2]
            sentence = sentence[header.end() :]
        out[current].append(sentence)
    return out


@pytest.fixture(scope="module")
def studies() -> list[tuple[list[Finding], str]]:
    rng = np.random.default_rng(2024)
    result = []
    for _ in range(NUM_STUDIES):
        findings = sample_findings(rng)
        result.append((findings, write_report(findings, rng)))
    return result


def test_long_reports_have_realistic_length(studies):
    words = np.array([len(report.split()) for _, report in studies])
    assert np.median(words) >= 120
    assert words.min() >= 90 and words.max() <= 320
    normal = [len(report.split()) for findings, report in studies if not findings]
    assert normal and min(normal) >= 90  # normal studies are long too, not one-liners


def test_most_sentences_are_negated_or_normal_statements(studies):
    sentences = [s for _, report in studies for s in split_sentences(report)]
    fraction = np.mean([bool(NEGATED_OR_NORMAL.search(s)) for s in sentences])
    assert fraction > 0.5


def test_reports_agree_with_the_findings(studies):
    for findings, report in studies:
        parts = sections(report)
        sentences = parts["FINDINGS"] + parts["IMPRESSION"]
        present = {f.name for f in findings}
        for finding in findings:

            def located(sentence: str, finding: Finding = finding) -> bool:
                text = sentence.lower()
                if not positive_mention(sentence, finding.name):
                    return False
                if finding.size_mm and not re.search(rf"\b{int(finding.size_mm)}(?: x \d+)? mm\b", text):
                    return False
                side = r"\b(?:bilateral|bilaterally|both)\b" if finding.side == "bilateral" else rf"\b{finding.side}\b"
                if finding.side and not re.search(side, text):
                    return False
                return not finding.zone or f"{finding.zone} lobe" in text

            assert any(located(s) for s in parts["FINDINGS"]), (finding, report)
            assert any(positive_mention(s, finding.name) for s in parts["IMPRESSION"]), (finding, report)
            assert not any(negated_mention(s, finding.name) for s in sentences), (finding, report)
        for name in FINDING_NAMES:
            if name not in present:
                assert any(negated_mention(s, name) for s in parts["FINDINGS"]), (name, report)
                assert not any(positive_mention(s, name) for s in sentences), (name, report)
        impression = " ".join(parts["IMPRESSION"])
        if findings:
            numbers = re.findall(r"(?:^|\s)(\d+)\) ", impression)
            assert numbers == [str(i) for i in range(1, len(findings) + 1)], report
        else:
            assert re.search(r"\bno acute\b|\bunremarkable\b|\bnormal ct\b", impression, re.I), report
            assert ")" not in impression


def test_long_report_measurements_and_zones():
    rng = np.random.default_rng(0)
    texts = [write_report([Finding("nodule", "left", "lower", 10.0)], rng) for _ in range(60)]
    assert any("10 x 8 mm" in t for t in texts) and any(re.search(r"\b10 mm\b", t) for t in texts)
    assert all("left lower lobe" in t or "lower lobe of the left lung" in t for t in texts)
    assert all("Consider follow-up CT in 3 months" in t or "Short-interval follow-up" in t for t in texts)


def test_long_style_is_deterministic_and_varied():
    def draw(seed: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [write_report(sample_findings(rng), rng) for _ in range(20)]

    assert draw(5) == draw(5)
    assert draw(5) != draw(6)
    normal = {write_report([], np.random.default_rng(seed)) for seed in range(20)}
    assert len(normal) == 20  # normal studies no longer share one of three reports


def test_short_style_is_the_original_output():
    """Strings produced by the implementation before the long style existed (same seeds, same calls)."""

    def draw(seed: int, count: int) -> list[str]:
        rng = np.random.default_rng(seed)
        return [write_report(sample_findings(rng), rng, style="short") for _ in range(count)]

    assert draw(0, 4) == [
        "Large 28 mm pulmonary mass in the upper lobe of the right lung, suspicious for malignancy. Small bilateral "
        "pleural effusion with adjacent atelectasis. No cardiomegaly.",
        "The heart is enlarged. Centrilobular emphysema in both upper lobes. A 26 mm mass is present in the right "
        "lower lobe. The kidneys are unremarkable. No pulmonary nodules.",
        "Unremarkable CT of the chest and abdomen.",
        "Centrilobular emphysema in both upper lobes. A 22 mm hypodense lesion is seen in the liver. The heart is "
        "enlarged. No lung mass. The lungs are clear without consolidation.",
    ]
    assert draw(2, 4) == [
        "There is a left pleural effusion. No focal consolidation. No suspicious pulmonary nodule.",
        "Small right pleural effusion with adjacent atelectasis. The lungs are clear without consolidation.",
        "A 19 mm hypodense lesion is seen in the liver. Solid nodule of 9 mm in the right lower lobe. Small bilateral "
        "pleural effusion with adjacent atelectasis. The kidneys are unremarkable. No lung mass.",
        "No acute findings.",
    ]


def test_short_reports_state_exactly_their_findings_in_words_the_tokenizer_corpus_has():
    """What the short style promises, over 300 seeded studies: a normal study is one of the normal one-liners; an
    abnormal one has one positive sentence per finding (its size, side and lobe) followed by 0..2 negations of distinct
    absent findings. The tokenizer's short corpus (first in the full corpus) holds every word they use."""
    from custom.data.report_phrases import NEGATIVE, NORMAL_REPORTS, POSITIVE

    rng = np.random.default_rng(1234)
    short_corpus = report_corpus(("short",))
    unique = list(dict.fromkeys(short_corpus))  # the full corpus drops repeats (templates without slots)
    assert report_corpus()[: len(unique)] == unique
    vocabulary = set(re.findall(r"[a-z]+", " ".join(short_corpus).lower()))
    negations = {sentence: name for name, sentences in NEGATIVE.items() for sentence in sentences}
    counts = {"normal": 0, "negations": set()}
    for _ in range(300):
        findings = sample_findings(rng)
        report = write_report(findings, rng, style="short")
        assert set(re.findall(r"[a-z]+", report.lower())) <= vocabulary, report
        if not findings:
            assert report in NORMAL_REPORTS
            counts["normal"] += 1
            continue
        sentences = re.split(r"(?<=\.) ", report)
        positives, denied = sentences[: len(findings)], sentences[len(findings) :]
        expected = {
            f.name: {t.format(size=int(f.size_mm), side=f.side, zone=f.zone) for t in POSITIVE[f.name]}
            for f in findings
        }
        assert sorted(next(n for n, options in expected.items() if p in options) for p in positives) == sorted(
            expected
        ), report
        named = [negations[sentence] for sentence in denied]
        assert len(named) <= 2 and len(set(named)) == len(named) and not set(named) & set(expected), report
        counts["negations"].add(len(named))
    assert 0 < counts["normal"] < 300 and counts["negations"] == {0, 1, 2}  # every case above occurred


def test_unknown_style_is_refused():
    with pytest.raises(ValueError, match="style"):
        write_report([], np.random.default_rng(0), style="medium")


def test_clean_report_keeps_every_content_sentence(studies):
    for _, report in studies:
        assert report.isascii()
        sentences = split_sentences(report)
        assert all(s.endswith(".") for s in sentences), report
        assert not any(re.fullmatch(r"\(?\d+[.)]", s) for s in sentences), report  # no number cut off an item
        content = [HEADERS.sub("", s) for s in sentences]
        assert len({s.lower() for s in content}) == len(content), report  # de-duplication would drop nothing
        cleaned = clean_report(report)
        assert cleaned == " ".join(content)
        assert not re.search(r"\b(?:TECHNIQUE|FINDINGS|IMPRESSION|COMPARISON)\s*:", cleaned)


def test_report_corpus_covers_the_long_vocabulary(studies):
    vocabulary = set(re.findall(r"[a-z]+", " ".join(report_corpus()).lower()))
    used = set(re.findall(r"[a-z]+", " ".join(report for _, report in studies).lower()))
    assert used <= vocabulary, used - vocabulary


def test_pairs_set_writes_the_chosen_report_style(tmp_path):
    import json
    import os

    from custom.data.make_synthetic_pairs import make_synthetic_pairs

    def rows(style: str) -> list[dict]:
        path = make_synthetic_pairs(
            str(tmp_path / style), num_train=3, num_val=1, shape=(16, 16, 16), seed=1, report_style=style
        )
        with open(path, encoding="utf-8") as f:
            datalist = json.load(f)
        return [{**row, "split": split} for split in ("training", "validation") for row in datalist[split]]

    long, short = rows("long"), rows("short")
    assert all(r["report"].startswith(("TECHNIQUE: ", "FINDINGS: ")) and len(r["report"].split()) >= 90 for r in long)
    assert all(len(r["report"].split()) < 60 and "FINDINGS" not in r["report"] for r in short)
    # only the text differs: same studies, findings and split for both styles
    assert [{k: v for k, v in r.items() if k != "report"} for r in long] == [
        {k: v for k, v in r.items() if k != "report"} for r in short
    ]
    image = os.path.join("images", long[0]["study_id"] + ".nii.gz")
    assert (tmp_path / "long" / image).read_bytes() == (tmp_path / "short" / image).read_bytes()
    with pytest.raises(ValueError, match="report_style"):
        make_synthetic_pairs(str(tmp_path / "bad"), num_train=1, num_val=0, shape=(16, 16, 16), report_style="x")
