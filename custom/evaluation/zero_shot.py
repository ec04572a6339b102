"""Zero-shot multi-label classification in the TCL image-text space, from versioned prompt-ensemble files.

Prompt file (JSON; ``custom/data/prompts/*.json``)::

    {"name": ..., "version": "1.0.0", "description": ...,
     "defaults": {"positive": ["There is {name}.", ...], "negative": ["No {name}.", ...]},
     "classes": {"<class name>": {"positive": [...], "negative": [...]}, ...}}

A class of the evaluated class list that the file does not list gets ``defaults`` with ``{name}`` filled in; a class
the file lists that is **not** in the class list stops the run (:class:`~custom.errors.DataError`, one line
naming the file, the key, the expected names and the one found), as does a class left without phrasings.

Score of class ``c`` for a volume embedding ``v`` (CheXzero-style positive-vs-negative ensembles): ``p_c`` / ``n_c``
are the re-normalised means of the embeddings of the class's positive / negative phrasings, and
``P(c) = softmax(s * [v . p_c, v . n_c])[0]`` with ``s`` the model's learnt inverse temperature. The ranking (and so
the AUROC) depends only on ``v . p_c - v . n_c``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from custom.data.checks import read_json_object
from custom.errors import DataError

__all__ = ["PROMPTS_DIR", "PromptSet", "load_prompt_set", "class_prompt_embeddings", "zero_shot_probabilities"]

PROMPTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "prompts")


@dataclass
class PromptSet:
    """``prompts[class] = (positive phrasings, negative phrasings)`` in class-list order; ``from_defaults`` lists
    the classes filled from the file's defaults."""

    path: str
    version: str
    class_names: list[str]
    prompts: dict[str, tuple[list[str], list[str]]]
    from_defaults: list[str]


def _phrasings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise DataError(f"{where}: expected a non-empty list of phrasings, found {value!r}")
    return [v.strip() for v in value]


def load_prompt_set(path: str, class_names: Sequence[str]) -> PromptSet:
    """Read and check a prompt file against ``class_names`` (module docstring rules)."""
    if not os.path.isfile(path) and not os.path.isabs(path) and os.path.isfile(os.path.join(PROMPTS_DIR, path)):
        path = os.path.join(PROMPTS_DIR, path)  # a bare file name means one of the shipped prompt sets
    content = read_json_object(path, "prompt_file")
    if "version" not in content:
        raise DataError(f"{path}: expected a 'version' key (prompt sets are versioned), found keys {sorted(content)}")
    classes = content.get("classes", {})
    if not isinstance(classes, dict):
        raise DataError(f"{path} key 'classes': expected an object keyed by class name, found {type(classes).__name__}")
    names = list(class_names)
    for name in classes:
        if name not in names:
            raise DataError(f"{path} key 'classes': expected class names from {names}, found unknown class '{name}'")
    defaults = content.get("defaults") or {}
    prompts, from_defaults = {}, []
    for name in names:
        if name in classes:
            entry = classes[name]
            where = f"{path} key 'classes.{name}"
            if not isinstance(entry, dict):
                raise DataError(f"{where}': expected {{'positive': [...], 'negative': [...]}}, found {entry!r}")
            prompts[name] = (
                _phrasings(entry.get("positive"), where + ".positive'"),
                _phrasings(entry.get("negative"), where + ".negative'"),
            )
        else:
            if not defaults:
                raise DataError(
                    f"{path}: expected phrasings for class '{name}' (under 'classes' or 'defaults'), found none"
                )
            positive = _phrasings(defaults.get("positive"), f"{path} key 'defaults.positive'")
            negative = _phrasings(defaults.get("negative"), f"{path} key 'defaults.negative'")
            prompts[name] = (
                [p.replace("{name}", name) for p in positive],
                [n.replace("{name}", name) for n in negative],
            )
            from_defaults.append(name)
    return PromptSet(path, str(content["version"]), names, prompts, from_defaults)


def class_prompt_embeddings(
    embed_texts: Callable[[list[str]], torch.Tensor], prompt_set: PromptSet
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(C, E)`` positive and ``(C, E)`` negative class embeddings: each the L2-normalised mean of its phrasings'
    embeddings (``embed_texts`` maps a list of strings to ``(n, E)``, e.g. ``T3DModel.embed_reports``)."""
    texts, owner = [], []
    for c, name in enumerate(prompt_set.class_names):
        positive, negative = prompt_set.prompts[name]
        texts += positive + negative
        owner += [(c, 0)] * len(positive) + [(c, 1)] * len(negative)
    embeddings = F.normalize(embed_texts(texts).float(), dim=-1)
    count, width = len(prompt_set.class_names), embeddings.shape[1]
    sums = torch.zeros(2, count, width, dtype=embeddings.dtype, device=embeddings.device)
    for row, (c, sign) in enumerate(owner):
        sums[sign, c] += embeddings[row]
    return F.normalize(sums[0], dim=-1), F.normalize(sums[1], dim=-1)


def zero_shot_probabilities(
    image_embeddings: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, scale: float = 1.0 / 0.07
) -> torch.Tensor:
    """``(N, E)`` image embeddings -> ``(N, C)`` probabilities that each class is present."""
    images = F.normalize(image_embeddings.float(), dim=-1)
    logits = torch.stack([images @ positive.float().T, images @ negative.float().T], dim=-1) * scale
    return logits.softmax(dim=-1)[..., 0]
