"""A small BERT built entirely on this machine: the text encoder of the CPU demo and the tests (no hub, no network).

A WordPiece tokenizer is trained on report sentences with Hugging Face ``tokenizers`` and wrapped as a
``PreTrainedTokenizerFast``; the model is a real ``transformers.BertModel`` (randomly initialised, seeded), saved with
``save_pretrained`` so it loads through the same ``AutoModel``/``AutoTokenizer`` path as RadBERT does on real runs.

    python -m custom.weights.offline_text_encoder --out_dir models/offline_text_encoder
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from custom.engines.distributed import main_process_first

__all__ = ["build_offline_text_encoder", "ensure_offline_text_encoder"]


def build_offline_text_encoder(
    out_dir: str,
    corpus: Sequence[str] | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    max_position_embeddings: int = 64,
    vocab_size: int = 1000,
    seed: int = 0,
) -> str:
    """Train the tokenizer on ``corpus`` (default: the synthetic report templates) and save tokenizer + model."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from custom.data.synthetic_reports import report_corpus

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(list(corpus or report_corpus()), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_position_embeddings,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
    )
    os.makedirs(out_dir, exist_ok=True)
    fast.save_pretrained(out_dir)
    BertModel(config).save_pretrained(out_dir)
    return out_dir


@main_process_first
def ensure_offline_text_encoder(out_dir: str, **kwargs) -> str:
    """Build the model unless ``out_dir`` already holds one (bundles call this in ``initialize``)."""
    if os.path.isfile(os.path.join(out_dir, "config.json")):
        return out_dir
    return build_offline_text_encoder(out_dir, **kwargs)


if __name__ == "__main__":
    import fire

    fire.Fire(build_offline_text_encoder)
