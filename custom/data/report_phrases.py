"""The phrasebook of the synthetic radiology reports: every sentence template, grouped by section and finding, and
the FINDINGS grammar that walks the regions in reading order. Data only; :mod:`custom.data.synthetic_reports` writes
reports from it. ``{size}``, ``{side}``, ``{lobe}`` ... are filled from a :class:`~custom.data.synthetic_ct.Finding`.
"""

from __future__ import annotations

REPORT_STYLES: tuple[str, ...] = ("long", "short")

NORMAL_REPORTS: tuple[str, ...] = (
    "No acute findings.",
    "No acute cardiopulmonary or abdominal abnormality.",
    "Unremarkable CT of the chest and abdomen.",
)

POSITIVE: dict[str, tuple[str, ...]] = {
    "nodule": (
        "There is a {size} mm nodule in the {side} {zone} lobe.",
        "A {size} mm pulmonary nodule is seen in the {zone} lobe of the {side} lung.",
        "Solid nodule of {size} mm in the {side} {zone} lobe.",
    ),
    "mass": (
        "A {size} mm mass is present in the {side} {zone} lobe.",
        "Large {size} mm pulmonary mass in the {zone} lobe of the {side} lung, suspicious for malignancy.",
    ),
    "pleural effusion": (
        "There is a {side} pleural effusion.",
        "Small {side} pleural effusion with adjacent atelectasis.",
    ),
    "consolidation": (
        "Patchy consolidation in the {side} {zone} lobe.",
        "Airspace consolidation is noted in the {zone} lobe of the {side} lung, likely pneumonia.",
    ),
    "emphysema": (
        "Centrilobular emphysema in both upper lobes.",
        "Upper lobe predominant emphysematous changes bilaterally.",
    ),
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly is present."),
    "hepatic lesion": (
        "A {size} mm hypodense lesion is seen in the liver.",
        "Hypoattenuating hepatic lesion measuring {size} mm.",
    ),
    "renal cyst": ("Simple cyst of {size} mm in the {side} kidney.", "A {size} mm cyst arises from the {side} kidney."),
}

NEGATIVE: dict[str, tuple[str, ...]] = {
    "nodule": ("No pulmonary nodules.", "No suspicious pulmonary nodule."),
    "mass": ("No lung mass.",),
    "pleural effusion": ("No pleural effusion.", "There is no pleural effusion."),
    "consolidation": ("No focal consolidation.", "The lungs are clear without consolidation."),
    "emphysema": ("No emphysema.",),
    "cardiomegaly": ("Heart size is normal.", "No cardiomegaly."),
    "hepatic lesion": ("The liver is unremarkable.", "No focal liver lesion."),
    "renal cyst": ("The kidneys are unremarkable.",),
}


# ---------------------------------------------------------------------------------------------------------------
# long style. Slots: {measure} ("9 mm" or "9 x 7 mm"), {side} / {Side} (right, left, bilateral), {zone} (upper, lower).
# Every positive phrasing names its finding the way t3d_tools.curation.bimcv.labels.ENGLISH_PATTERNS reads it, and no
# negation or hedge ("possible", "suspicious for") precedes the finding's name, so rule-based labelers agree with
# the ground truth; no phrase outside a finding's own statements names another finding (no "renal mass").

TECHNIQUE: tuple[str, ...] = (
    "Contrast-enhanced CT of the chest and abdomen.",
    "CT of the chest and abdomen with intravenous contrast.",
    "Helical CT of the chest and upper abdomen was performed after intravenous contrast administration.",
    "Axial CT images of the chest and abdomen were obtained with intravenous contrast and multiplanar reformats.",
)
COMPARISON: tuple[str, ...] = (
    "No prior studies are available for comparison.",
    "No prior imaging for comparison.",
    "There are no prior examinations for comparison.",
)

LONG_POSITIVE: dict[str, tuple[str, ...]] = {
    "nodule": (
        "There is a {measure} solid nodule in the {side} {zone} lobe.",
        "A {measure} pulmonary nodule is seen in the {zone} lobe of the {side} lung.",
        "Solid pulmonary nodule in the {side} {zone} lobe measuring {measure}.",
        "A noncalcified nodule in the {side} {zone} lobe measures {measure}.",
    ),
    "mass": (
        "There is a {measure} spiculated mass in the {side} {zone} lobe.",
        "A {measure} pulmonary mass is present in the {zone} lobe of the {side} lung, suspicious for malignancy.",
        "Lobulated soft tissue mass in the {side} {zone} lobe measuring {measure}.",
    ),
    "consolidation": (
        "There is patchy airspace consolidation in the {side} {zone} lobe.",
        "Consolidation with air bronchograms is present in the {zone} lobe of the {side} lung.",
        "Dense consolidation in the {side} {zone} lobe, likely pneumonia.",
    ),
    "emphysema": (
        "Centrilobular emphysema in both upper lobes.",
        "There is upper lobe predominant centrilobular emphysema bilaterally.",
        "Emphysematous changes are present in both upper lobes.",
    ),
    "pleural effusion": (
        "There is a {side} pleural effusion.",
        "A {side} pleural effusion is present with adjacent compressive atelectasis.",
        "{Side} pleural effusion layering dependently.",
    ),
    "pleural effusion/bilateral": (
        "There are bilateral pleural effusions.",
        "Bilateral pleural effusions are present with adjacent compressive atelectasis.",
        "Bilateral pleural effusions layering dependently.",
    ),
    "cardiomegaly": ("The heart is enlarged.", "Cardiomegaly is present.", "There is enlargement of the heart."),
    "hepatic lesion": (
        "There is a {measure} hypoattenuating hepatic lesion in the {side} lobe of the liver.",
        "A {measure} hypodense lesion is seen in the liver, in the {side} hepatic lobe.",
        "Indeterminate {measure} hypoattenuating liver lesion in the {side} hepatic lobe.",
    ),
    "renal cyst": (
        "A {measure} simple cyst arises from the {side} kidney.",
        "There is a {measure} simple renal cyst in the {side} kidney.",
        "Simple cyst in the {side} kidney measuring {measure}.",
        "{Side} renal cyst measuring {measure}, of fluid attenuation.",
    ),
}

IMPRESSION: dict[str, tuple[str, ...]] = {
    "mass": (
        "{measure} mass in the {side} {zone} lobe, suspicious for primary lung malignancy.",
        "{Side} {zone} lobe pulmonary mass measuring {measure}, concerning for malignancy.",
    ),
    "consolidation": (
        "{Side} {zone} lobe consolidation, likely pneumonia in the appropriate clinical setting.",
        "Consolidation in the {side} {zone} lobe, compatible with pneumonia.",
    ),
    "pleural effusion": ("{Side} pleural effusion.", "{Side} pleural effusion with adjacent atelectasis."),
    "pleural effusion/bilateral": (
        "Bilateral pleural effusions.",
        "Bilateral pleural effusions with adjacent atelectasis.",
    ),
    "nodule": (
        "{measure} solid nodule in the {side} {zone} lobe.",
        "{Side} {zone} lobe pulmonary nodule measuring {measure}.",
    ),
    "hepatic lesion": (
        "{measure} indeterminate hepatic lesion in the {side} lobe of the liver.",
        "Indeterminate {measure} liver lesion in the {side} hepatic lobe.",
    ),
    "cardiomegaly": ("Cardiomegaly.", "Enlarged heart."),
    "emphysema": ("Centrilobular emphysema.", "Upper lobe predominant emphysema."),
    "renal cyst": (
        "{measure} simple cyst in the {side} kidney, no follow-up required.",
        "Simple {side} renal cyst measuring {measure}.",
    ),
}
# follow-up sentence after an impression item ("nodule" by size, roughly the Fleischner solid-nodule bands)
RECOMMENDATION: dict[str, tuple[str, ...]] = {
    "nodule/small": (
        "Recommend follow-up chest CT in 6 to 12 months.",
        "Follow-up CT in 6 to 12 months is recommended.",
    ),
    "nodule/large": (
        "Consider follow-up CT in 3 months, PET/CT or tissue sampling.",
        "Short-interval follow-up CT in 3 months or PET/CT is recommended.",
    ),
    "mass": (
        "Recommend tissue sampling and staging.",
        "Further evaluation with PET/CT and tissue sampling is recommended.",
    ),
    "hepatic lesion": (
        "Further characterization with liver MRI is suggested.",
        "Nonurgent MRI of the liver is recommended.",
    ),
}
NODULE_FOLLOW_UP_MM = 8.0  # nodules above this size get the short-interval recommendation

CLOSING_ABNORMAL: tuple[str, ...] = (
    "No other acute abnormality in the chest or abdomen.",
    "Otherwise no acute abnormality.",
    "No other acute findings.",
)
CLOSING_NORMAL: tuple[str, ...] = (
    "No acute abnormality in the chest or abdomen.",
    "No acute cardiopulmonary or abdominal abnormality.",
    "Unremarkable CT of the chest and abdomen.",
    "Normal CT of the chest and abdomen.",
)

# Regions in reading order. Entries:
#   ("positive", names)                present findings among names, as positive sentences (rng order)
#   ("negate", names, p, variants)     when every one of names is absent and not yet negated; a grouped statement
#                                      (several names) is used with probability p, else its names fall through
#   ("clear", names, variants)         when none of names is present
#   ("otherwise", names, variants)     when some of names is present
#   ("always", p, variants)            with probability p
LUNG = ("nodule", "mass", "consolidation", "emphysema")
# (a hand-laid grammar table, one rule per line: the formatter leaves it as written)
# fmt: off
REGIONS: tuple[tuple[str, tuple[tuple, ...]], ...] = (
    ("lungs and airways", (
        ("always", 1.0, (
            "The central airways are patent.",
            "The trachea and central bronchi are patent.",
            "The tracheobronchial tree is patent.",
        )),
        ("positive", LUNG),
        ("clear", LUNG, (
            "The lungs are clear.",
            "Both lungs are well aerated.",
            "The lungs are well expanded and clear.",
        )),
        ("otherwise", LUNG, (
            "The remaining lung parenchyma is clear.",
            "The lungs are otherwise clear.",
            "The remainder of the lungs is clear.",
        )),
        ("negate", ("nodule", "mass"), 0.6, (
            "No suspicious pulmonary nodule or mass.",
            "There are no pulmonary nodules or masses.",
            "No pulmonary nodule or mass is identified.",
        )),
        ("negate", ("nodule",), 1.0, (
            "No suspicious pulmonary nodule.",
            "No pulmonary nodules are identified.",
            "There is no suspicious pulmonary nodule.",
        )),
        ("negate", ("mass",), 1.0, (
            "No pulmonary mass.",
            "There is no lung mass.",
            "No endobronchial lesion or pulmonary mass.",
        )),
        ("negate", ("consolidation",), 1.0, (
            "No focal consolidation.",
            "There is no airspace consolidation.",
            "No focal airspace consolidation is seen.",
        )),
        ("negate", ("emphysema",), 1.0, ("No emphysema.", "There is no emphysema.", "No emphysematous change.")),
        ("always", 0.4, ("No bronchiectasis or interstitial abnormality.", "No interstitial lung disease.")),
    )),
    ("pleura", (
        ("positive", ("pleural effusion",)),
        ("negate", ("pleural effusion",), 1.0, (
            "No pleural effusion or pneumothorax.",
            "There is no pleural effusion or pneumothorax.",
            "No pleural effusion. No pneumothorax.",
        )),
        ("otherwise", ("pleural effusion",), ("No pneumothorax.", "There is no pneumothorax.")),
    )),
    ("heart and mediastinum", (
        ("positive", ("cardiomegaly",)),
        ("negate", ("cardiomegaly",), 1.0, (
            "The heart is normal in size.",
            "Heart size is normal.",
            "The heart is not enlarged.",
        )),
        ("always", 1.0, (
            "No pericardial effusion.",
            "There is no pericardial effusion.",
            "The pericardium is unremarkable without effusion.",
        )),
        ("always", 1.0, (
            "No mediastinal or hilar lymphadenopathy.",
            "No enlarged mediastinal, hilar or axillary lymph nodes.",
            "There is no thoracic lymphadenopathy.",
        )),
        ("always", 0.7, (
            "The thoracic aorta is normal in caliber.",
            "The thoracic aorta and main pulmonary artery are normal in caliber.",
            "No thoracic aortic aneurysm.",
        )),
        ("always", 0.3, (
            "The esophagus is unremarkable.",
            "The visualized thyroid gland and esophagus are unremarkable.",
        )),
    )),
    ("liver", (
        ("positive", ("hepatic lesion",)),
        ("negate", ("hepatic lesion",), 1.0, (
            "The liver is normal in size and attenuation without focal lesion.",
            "The liver is unremarkable with no focal hepatic lesion.",
            "No focal liver lesion is identified. The liver is normal in size.",
        )),
        ("otherwise", ("hepatic lesion",), (
            "The liver is otherwise normal in size and attenuation.",
            "The remainder of the liver is unremarkable.",
        )),
        ("always", 0.5, ("The portal and hepatic veins are patent.", "The portal vein is patent.")),
    )),
    ("gallbladder and bile ducts", (
        ("always", 1.0, (
            "The gallbladder is unremarkable.",
            "The gallbladder is normal without gallstones.",
            "The gallbladder is well distended without wall thickening.",
        )),
        ("always", 0.8, (
            "No biliary ductal dilatation.",
            "There is no intrahepatic or extrahepatic biliary dilatation.",
            "The bile ducts are not dilated.",
        )),
    )),
    ("spleen", (
        ("always", 1.0, (
            "The spleen is normal in size.",
            "The spleen is unremarkable.",
            "The spleen is normal in size without focal splenic lesion.",
        )),
    )),
    ("pancreas", (
        ("always", 1.0, (
            "The pancreas is unremarkable.",
            "The pancreas is normal without ductal dilatation.",
            "The pancreas enhances homogeneously without peripancreatic stranding.",
        )),
    )),
    ("kidneys and adrenals", (
        ("positive", ("renal cyst",)),
        ("negate", ("renal cyst",), 1.0, (
            "The kidneys are normal in size without renal cysts or hydronephrosis.",
            "Both kidneys are unremarkable with no renal cyst or hydronephrosis.",
            "No renal cysts. The kidneys enhance symmetrically without hydronephrosis.",
        )),
        ("otherwise", ("renal cyst",), (
            "No hydronephrosis.",
            "There is no hydronephrosis or renal calculus.",
            "The kidneys are otherwise unremarkable without hydronephrosis.",
        )),
        ("always", 1.0, (
            "The adrenal glands are normal.",
            "The adrenal glands are unremarkable.",
            "Both adrenal glands are normal in thickness.",
        )),
    )),
    ("bowel and peritoneum", (
        ("always", 1.0, (
            "No bowel obstruction or bowel wall thickening.",
            "The visualized bowel loops are normal in caliber.",
            "The stomach and visualized bowel are unremarkable.",
        )),
        ("always", 1.0, (
            "No ascites or free intraperitoneal air.",
            "There is no free fluid or free air.",
            "No intra-abdominal free fluid.",
        )),
        ("always", 0.8, (
            "No abdominal or retroperitoneal lymphadenopathy.",
            "No enlarged abdominal lymph nodes.",
            "There is no retroperitoneal lymphadenopathy.",
        )),
        ("always", 0.5, (
            "The abdominal aorta is normal in caliber.",
            "The abdominal aorta is of normal caliber without aneurysm.",
        )),
    )),
    ("bones and soft tissues", (
        ("always", 1.0, (
            "No suspicious osseous lesion.",
            "No acute osseous abnormality.",
            "The osseous structures are intact without suspicious lesion.",
        )),
        ("always", 0.5, (
            "Mild degenerative changes of the thoracic spine.",
            "Mild multilevel degenerative changes of the spine.",
        )),
        ("always", 0.6, (
            "The visualized soft tissues are unremarkable.",
            "The chest wall and soft tissues are unremarkable.",
        )),
    )),
)
# fmt: on
# impression order: most significant first
IMPRESSION_ORDER: tuple[str, ...] = (
    "mass",
    "consolidation",
    "pleural effusion",
    "nodule",
    "hepatic lesion",
    "cardiomegaly",
    "emphysema",
    "renal cyst",
)
