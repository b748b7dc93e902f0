#!/usr/bin/env python3
"""Makes the architecture fixtures: small random-weight sentence-transformers models of every
architecture aistack runs, with sentence-transformers' own embeddings of a fixed set of texts as
the expected values (aistack-core/tests/fixtures/arch/<name>/).

It needs torch, transformers and sentence-transformers, which CI never installs (torch is a
multi-GB download): run it by hand, in a virtual environment of its own, when a fixture must
change, and commit what it writes:

    python3 -m venv /tmp/fixtures-venv
    /tmp/fixtures-venv/bin/pip install sentence-transformers==6.3.0
    /tmp/fixtures-venv/bin/python scripts/make-arch-fixtures.py

Each fixture directory holds the model as sentence-transformers saves it (config.json,
model.safetensors, tokenizer.json, modules.json, the module folders) and expected.jsonl: per
text, its token count and its embedding, plain and with each of the model's prompts.

Tokenizers are trained here with `tokenizers`, on the texts of
shared/reference/minilm-public.jsonl plus a few lines in other scripts, using each architecture's
real algorithm: WordPiece for BERT and DistilBERT, byte-level BPE for RoBERTa, ModernBERT and
Qwen3, Unigram with Metaspace for XLM-RoBERTa and CamemBERT. Weights are drawn with a wide
initialization (INIT_RANGE) so that different texts give clearly different vectors.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModel,
    BertConfig,
    CamembertConfig,
    DistilBertConfig,
    ModernBertConfig,
    PreTrainedTokenizerFast,
    Qwen3Config,
    RobertaConfig,
    XLMRobertaConfig,
)
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "aistack-core" / "tests" / "fixtures" / "arch"
REFERENCE = ROOT.parent / "shared" / "reference" / "minilm-public.jsonl"
INIT_RANGE = 0.4
EXCLUDE_PROMPT = {"camembert"}
SEED = 20261207

OTHER_SCRIPTS = [
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "Die Katze schläft auf dem Sofa, während es draußen regnet.",
    "El gato duerme en el sofá mientras llueve afuera.",
    "Кошка спит на диване, пока за окном идёт дождь.",
    "猫在沙发上睡觉，外面正在下雨。",
    "雨が降っている間、猫はソファで寝ています。",
    "القطة نائمة على الأريكة بينما تمطر في الخارج.",
    "Η γάτα κοιμάται στον καναπέ ενώ βρέχει έξω.",
    "고양이가 비가 오는 동안 소파에서 자고 있다.",
    "Emoji too: 🐱☔ and accents: naïve café, Ångström.",
]


def corpus() -> list[str]:
    lines = [json.loads(l)["text"] for l in REFERENCE.read_text().splitlines() if l.strip()]
    return lines + OTHER_SCRIPTS * 3


def test_texts() -> list[str]:
    lines = [json.loads(l) for l in REFERENCE.read_text().splitlines() if l.strip()]
    short = [r["text"] for r in lines if r["tokens"] < 40][:24]
    mid = [r["text"] for r in lines if 60 <= r["tokens"] < 128][:6]
    long = [r["text"] for r in lines if r["tokens"] >= 256][:4]
    odd = [
        "a",
        "   leading and trailing spaces   ",
        "UPPER case and MiXeD Case words",
        "a <pad> token written in the text, and <s> and </s> too",
        "tabs\tand\nnewlines\n\nin between",
    ]
    return short + mid + long + OTHER_SCRIPTS + odd


def wordpiece(lowercase: bool, vocab: int) -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tok.decoder = decoders.WordPiece()
    return tok


def byte_bpe(special: list[str], vocab: int, template: tuple[str, str] | None) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer)
    if template is not None:
        first, last = template
        pairs = [(t, tok.token_to_id(t)) for t in {first, last} if t]
        single = " ".join(x for x in (first, "$A", last) if x)
        tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=pairs)
    return tok


def unigram(vocab: int) -> Tokenizer:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(" {2,}", " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    special = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(
        corpus(), trainers.UnigramTrainer(vocab_size=vocab, special_tokens=special, unk_token="<unk>")
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return tok


def hf_tokenizer(tok: Tokenizer, **special) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=100_000, **special)


BERT_SPECIAL = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
ROBERTA_SPECIAL = dict(
    bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
    mask_token="<mask>",
)


def fixtures():
    """name → (tokenizer, HF tokenizer specials, config, pooling modes, dense, normalize,
    prompts, max_seq_length, do_lower_case); a name in EXCLUDE_PROMPT pools without the prompt's
    tokens (include_prompt=False)."""
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    out = {}

    tok = wordpiece(lowercase=False, vocab=600)
    out["bert-cased-weightedmean"] = (
        tok, BERT_SPECIAL,
        BertConfig(vocab_size=tok.get_vocab_size(), max_position_embeddings=128, **small),
        ("weightedmean",), None, True, {}, 48, True,
    )

    tok = wordpiece(lowercase=True, vocab=600)
    out["distilbert"] = (
        tok, BERT_SPECIAL,
        DistilBertConfig(
            vocab_size=tok.get_vocab_size(), dim=32, n_layers=2, n_heads=4, hidden_dim=64,
            max_position_embeddings=128, pad_token_id=0,
        ),
        ("mean",), None, True, {}, 64, False,
    )

    tok = byte_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], 700, ("<s>", "</s>"))
    out["roberta"] = (
        tok, ROBERTA_SPECIAL,
        RobertaConfig(
            vocab_size=tok.get_vocab_size(), max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, **small,
        ),
        ("cls",), (32, 16, "Tanh"), True, {}, 64, False,
    )

    tok = unigram(700)
    out["xlm-roberta"] = (
        tok, ROBERTA_SPECIAL,
        XLMRobertaConfig(
            vocab_size=tok.get_vocab_size(), max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, **small,
        ),
        ("mean",), None, True, {"query": "query: ", "passage": "passage: "}, 64, False,
    )

    tok = unigram(650)
    out["camembert"] = (
        tok, ROBERTA_SPECIAL,
        CamembertConfig(
            vocab_size=tok.get_vocab_size(), max_position_embeddings=130, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5, **small,
        ),
        ("max", "mean_sqrt_len_tokens"), (64, 24, "Identity"), False, {"query": "query: "}, 64, False,
    )

    tok = byte_bpe(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], 700, ("[CLS]", "[SEP]"))
    out["modernbert"] = (
        tok, BERT_SPECIAL,
        ModernBertConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=48, num_hidden_layers=4,
            num_attention_heads=4, max_position_embeddings=256, local_attention=8,
            global_attn_every_n_layers=3, pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
            eos_token_id=3, initializer_range=INIT_RANGE, initializer_cutoff_factor=3.0,
        ),
        ("mean",), None, True, {"query": "search_query: ", "document": "search_document: "}, 96, False,
    )

    tok = byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], 700, (None, "<|endoftext|>"))
    out["qwen3"] = (
        tok, dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>"),
        Qwen3Config(
            vocab_size=tok.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
            rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        ),
        ("lasttoken",), None, True,
        {"query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:"},
        96, False,
    )
    return out


def widen(model: torch.nn.Module) -> None:
    """Redraws every weight matrix and embedding wide (norm scales near 1, biases small), so
    that the vectors of different texts are clearly apart."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * INIT_RANGE)
            elif "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def make(name: str, spec) -> None:
    tok, specials, config, modes, dense, normalize, prompts, max_seq, lower = spec
    work = OUT / f".{name}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(SEED)
    config.initializer_range = INIT_RANGE
    model = AutoModel.from_config(config)
    widen(model)
    model.save_pretrained(work, safe_serialization=True)
    hf_tokenizer(tok, **specials).save_pretrained(work)

    transformer = Transformer(str(work), max_seq_length=max_seq, do_lower_case=lower)
    dim = transformer.get_embedding_dimension()
    pooling = Pooling(
        dim, pooling_mode=modes if len(modes) > 1 else modes[0], include_prompt=name not in EXCLUDE_PROMPT
    )
    modules = [transformer, pooling]
    if dense is not None:
        d_in, d_out, act = dense
        layer = Dense(d_in, d_out, activation_function=getattr(torch.nn, act)())
        g = torch.Generator().manual_seed(SEED + 1)
        with torch.no_grad():
            layer.linear.weight.copy_(torch.randn(layer.linear.weight.shape, generator=g) * 0.3)
            layer.linear.bias.copy_(torch.randn(layer.linear.bias.shape, generator=g) * 0.1)
        modules.append(layer)
    if normalize:
        modules.append(Normalize())
    st = SentenceTransformer(modules=modules, prompts=prompts or None)
    target = OUT / name
    shutil.rmtree(target, ignore_errors=True)
    st.save(str(target))
    shutil.rmtree(work)

    # Expected values come from the model as saved, loaded again.
    st = SentenceTransformer(str(target), device="cpu")
    texts = test_texts()
    plain = st.encode(texts, batch_size=8, convert_to_numpy=True)
    with_prompts = {p: st.encode(texts, batch_size=8, convert_to_numpy=True, prompt_name=p) for p in prompts}
    with open(target / "expected.jsonl", "w") as f:
        for i, t in enumerate(texts):
            n = int(getattr(st, "preprocess", st.tokenize)([t])["input_ids"].shape[1])
            row = {"text": t, "tokens": n, "embedding": [round(float(x), 7) for x in plain[i]]}
            if with_prompts:
                row["prompts"] = {p: [round(float(x), 7) for x in v[i]] for p, v in with_prompts.items()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    # How far apart the texts are: the fixture is useless if every vector is alike.
    sims = plain @ plain.T
    if not normalize:
        norms = (plain**2).sum(1) ** 0.5
        sims = sims / norms[:, None] / norms[None, :]
    off = sims[~torch.eye(len(texts), dtype=torch.bool).numpy()]
    print(f"{name}: dims {plain.shape[1]}, pairwise cosine mean {off.mean():.3f}, max {off.max():.3f}")
    for junk in target.rglob("README.md"):
        junk.unlink()


def main() -> None:
    random.seed(SEED)
    only = set(sys.argv[1:])
    for name, spec in fixtures().items():
        if not only or name in only:
            make(name, spec)


if __name__ == "__main__":
    main()
