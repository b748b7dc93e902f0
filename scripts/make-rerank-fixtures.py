#!/usr/bin/env python3
"""Makes the reranker fixtures: small random-weight cross-encoders of each architecture aistack
reranks with, saved by sentence-transformers' own CrossEncoder.save(), with CrossEncoder's own
scores of a fixed set of (query, document) pairs as the expected values
(aistack-core/tests/fixtures/rerank/<name>/, and rerank/meta.json for all of them).

Like scripts/make-arch-fixtures.py it needs torch, transformers and sentence-transformers, which
CI never installs: run it by hand in a virtual environment of its own when a fixture must change,
and commit what it writes:

    python3 -m venv /tmp/fixtures-venv
    /tmp/fixtures-venv/bin/pip install sentence-transformers==6.3.0
    /tmp/fixtures-venv/bin/python scripts/make-rerank-fixtures.py [bert] [xlm-roberta] [modernbert]

It reads the tokenizers of the architecture fixtures (tests/fixtures/arch/, made by
make-arch-fixtures.py), so those must exist. Each tokenizer gets the pair template of the models
it stands in for, written into tokenizer.json:

    bert         [CLS] A [SEP] B [SEP]      type ids 0 … 0 1 … 1   (cross-encoder/ms-marco-MiniLM-L6-v2)
    xlm-roberta  <s> A </s> </s> B </s>     no type ids            (BAAI/bge-reranker-base)
    modernbert   [CLS] A [SEP] B [SEP]      no type ids            (Alibaba-NLP/gte-reranker-modernbert-base)

Each fixture directory holds the model as CrossEncoder 6.3 saves it (config.json with
num_labels 1, model.safetensors, tokenizer.json, tokenizer_config.json, modules.json,
sentence_bert_config.json, config_sentence_transformers.json; the README.md model card is
dropped) and expected.jsonl: per pair, its token count as CrossEncoder tokenizes it (truncated
"longest_first" to max_length), its score as CrossEncoder.predict gives it (the Sigmoid of the
logit, CrossEncoder's default for num_labels=1) and the raw logit (predict with
activation_fn=torch.nn.Identity()). Scores and logits are float32 values written in their
shortest exact form.

Weights are drawn wide (WEIGHT_STD) so that the pairs' scores are spread out.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tokenizers import Tokenizer, processors
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    ModernBertConfig,
    PreTrainedTokenizerFast,
    XLMRobertaConfig,
)
import sentence_transformers
import transformers
from sentence_transformers import CrossEncoder

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "aistack-core" / "tests" / "fixtures"
ARCH = FIXTURES / "arch"
OUT = FIXTURES / "rerank"
REFERENCE = ROOT.parent / "shared" / "reference" / "minilm-public.jsonl"
MAX_LENGTH = 128
WEIGHT_STD = 0.2
# The heads that read the first token alone (BERT's pooler, RoBERTa's classifier) give logits in a
# band a quarter to a third as wide as ModernBERT's mean-pooled head at WEIGHT_STD (std 0.5-0.65
# against 2.0 over the pairs): their last projection is drawn wider to spread the scores.
OUT_STD_CLS = 0.8
SEED = 20261208
BATCH_SIZE = 32  # CrossEncoder.predict's default

BERT_SPECIAL = dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
ROBERTA_SPECIAL = dict(
    bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
    mask_token="<mask>",
)


def pairs() -> list[tuple[str, str]]:
    r = [json.loads(l)["text"] for l in REFERENCE.read_text().splitlines() if l.strip()]
    return [
        # Short queries, short documents; one query against several documents.
        ("how are dictionary keys ordered", r[96]),
        ("how are dictionary keys ordered", r[122]),
        ("how are dictionary keys ordered", r[113]),
        ("when is a breakpoint active", r[231]),
        ("when is a breakpoint active", r[211]),
        ("octal output", r[114]),
        ("octal output", r[179]),
        ("comparing strings with bytes", r[43]),
        ("comparing strings with bytes", r[256]),
        ("What is returned?", r[149]),
        ("unicode escapes", r[152]),
        ("Exception messages", r[88]),
        # Middle-sized documents, near max_length with the query.
        ("async def coroutine syntax", r[13]),
        ("split a string on whitespace", r[28]),
        ("format string alignment", r[229]),
        ("the Ellipsis object", r[292]),
        ("how to make an object callable", r[297]),
        # Documents far longer than max_length: only the document is cut.
        ("assert statement", r[280]),
        ("assignment statements rebind names", r[281]),
        ("identifiers", r[283]),
        ("string literals", r[284]),
        ("customizing attribute access with __getattr__", r[285]),
        ("break statement in loops", r[296]),
        ("class definitions", r[299]),
        # Long queries: longest_first cuts the query alone, both, or the document first.
        (r[289], "Binary arithmetic"),
        (r[298], r[299]),
        (r[28], r[287]),
        (r[13], r[292]),
        # Other scripts.
        ("Où dort le chat ?", "Le chat dort sur le canapé pendant que la pluie tombe."),
        ("Wo schläft die Katze?", "Die Katze schläft auf dem Sofa, während es draußen regnet."),
        ("猫在哪里睡觉？", "猫在沙发上睡觉，外面正在下雨。"),
        ("猫はどこで寝ていますか", "雨が降っている間、猫はソファで寝ています。"),
        ("Где спит кошка?", "Кошка спит на диване, пока за окном идёт дождь."),
        ("أين تنام القطة؟", "القطة نائمة على الأريكة بينما تمطر في الخارج."),
        ("Πού κοιμάται η γάτα;", "Η γάτα κοιμάται στον καναπέ ενώ βρέχει έξω."),
        ("고양이는 어디서 자나요?", "고양이가 비가 오는 동안 소파에서 자고 있다."),
        ("🐱 and ☔", "Emoji too: 🐱☔ and accents: naïve café, Ångström."),
        # Near-empty documents and odd text.
        ("what is a breakpoint", "."),
        ("what is a breakpoint", " "),
        ("a", "a"),
        ("UPPER case and MiXeD Case words", "upper case and mixed case words"),
        ("tabs\tand\nnewlines\n\nin between", "a [SEP] token written in the text, and <s> and </s> too"),
        ("   leading and trailing spaces   ", r[73]),
    ]


def arch_tokenizer(name: str) -> Tokenizer:
    tok = Tokenizer.from_file(str(ARCH / name / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def fixtures():
    """name → (tokenizer with its pair template, HF tokenizer specials, model input names, config,
    classifier pooling as recorded in meta.json, std of the final projection's weights)."""
    out = {}

    # cross-encoder/ms-marco-MiniLM-L6-v2: lowercasing WordPiece, BERT pair template with
    # segment ids, BertPooler (dense + tanh on [CLS]) then classifier.
    tok = arch_tokenizer("distilbert")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    out["bert"] = (
        tok, BERT_SPECIAL, ["input_ids", "token_type_ids", "attention_mask"],
        BertConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0, num_labels=1,
        ),
        "cls", OUT_STD_CLS,
    )

    # BAAI/bge-reranker-base: Unigram + Metaspace, RoBERTa pair template (all type ids 0, and the
    # tokenizer returns none), RobertaClassificationHead (dense + tanh + out_proj on <s>).
    tok = arch_tokenizer("xlm-roberta")
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s>:0 $A:0 </s>:0",
        pair="<s>:0 $A:0 </s>:0 </s>:0 $B:0 </s>:0",
        special_tokens=[("<s>", bos), ("</s>", eos)],
    )
    out["xlm-roberta"] = (
        tok, ROBERTA_SPECIAL, ["input_ids", "attention_mask"],
        XLMRobertaConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0,
            eos_token_id=2, layer_norm_eps=1e-5, num_labels=1,
        ),
        "cls", OUT_STD_CLS,
    )

    # Alibaba-NLP/gte-reranker-modernbert-base: byte-level BPE, [CLS] A [SEP] B [SEP], mean
    # pooling over the attention mask, then head (dense, gelu, norm) and classifier. Local
    # attention windows of 16 tokens (8 either side) on layers 1 and 2; 0 and 3 are global.
    tok = arch_tokenizer("modernbert")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    out["modernbert"] = (
        tok, BERT_SPECIAL, ["input_ids", "attention_mask"],
        ModernBertConfig(
            vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
            num_attention_heads=4, max_position_embeddings=8192, local_attention=16, global_attn_every_n_layers=3,
            pad_token_id=tok.token_to_id("[PAD]"), cls_token_id=cls, sep_token_id=sep, bos_token_id=cls,
            eos_token_id=sep, classifier_pooling="mean", classifier_activation="gelu", classifier_bias=False,
            num_labels=1,
        ),
        "mean", WEIGHT_STD,
    )
    return out


def widen(model: torch.nn.Module, out_std: float) -> None:
    """Redraws every weight matrix and embedding wide (norm scales near 1, biases small), so that
    the scores of different pairs are clearly apart; the final projection (to the one logit) with
    out_std."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                final = name in ("classifier.weight", "classifier.out_proj.weight")
                std = out_std if final else WEIGHT_STD
                p.copy_(torch.randn(p.shape, generator=g) * std)
            elif "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def f32(x) -> float:
    """A float32 in its shortest exact decimal form."""
    return float(np.format_float_positional(np.float32(x), unique=True, trim="-"))


def manual_logit(name: str, model, features: dict) -> float:
    """The logit computed by hand from the encoder's last hidden state, to check the head."""
    inputs = {k: v for k, v in features.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        if name == "bert":
            hs = model.bert(**inputs).last_hidden_state
            pooled = torch.tanh(model.bert.pooler.dense(hs[:, 0]))
            return float(model.classifier(pooled)[0, 0])
        if name == "xlm-roberta":
            hs = model.roberta(**inputs).last_hidden_state
            head = model.classifier
            return float(head.out_proj(torch.tanh(head.dense(hs[:, 0])))[0, 0])
        hs = model.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hs.dtype)
        mean = (hs * mask).sum(1) / mask.sum(1)
        head = model.head
        pooled = head.norm(torch.nn.functional.gelu(head.dense(mean)))
        return float(model.classifier(pooled)[0, 0])


def make(name: str, spec) -> dict:
    tok, specials, input_names, config, pooling, out_std = spec
    work = OUT / f".{name}-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_config(config)
    widen(model, out_std)
    model.save_pretrained(work, safe_serialization=True)
    PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=MAX_LENGTH, model_input_names=input_names, **specials
    ).save_pretrained(work)

    target = OUT / name
    shutil.rmtree(target, ignore_errors=True)
    CrossEncoder(str(work), max_length=MAX_LENGTH, device="cpu").save(str(target))
    shutil.rmtree(work)
    for junk in target.rglob("README.md"):
        junk.unlink()

    # Expected values come from the model as saved, loaded again the way a user loads it.
    ce = CrossEncoder(str(target), device="cpu")
    assert type(ce.activation_fn) is torch.nn.Sigmoid, ce.activation_fn
    assert ce.max_seq_length == MAX_LENGTH, ce.max_seq_length
    assert ce.num_labels == 1
    ps = pairs()
    scores = ce.predict(ps, batch_size=BATCH_SIZE)
    logits = ce.predict(ps, batch_size=BATCH_SIZE, activation_fn=torch.nn.Identity())
    one_scores = ce.predict(ps, batch_size=1)
    one_logits = ce.predict(ps, batch_size=1, activation_fn=torch.nn.Identity())
    # Padded batches change the shapes of the matrix products and so the order of float32 sums:
    # with these wide weights float32 is itself ~1e-5 off float64 on the logits, whatever the batch,
    # so batch 1 and batch 32 agree to a few 1e-6 on the logits and about 1e-6 on the scores.
    batch_diff = float(np.abs(logits - one_logits).max()), float(np.abs(scores - one_scores).max())
    assert batch_diff[0] <= 2e-5 and batch_diff[1] <= 5e-6, batch_diff
    assert np.abs(scores - 1 / (1 + np.exp(-logits.astype(np.float64)))).max() <= 1e-6

    # tokenizer.json alone, truncating longest_first to max_length, tokenizes as CrossEncoder
    # does (what a Rust reader of the folder sees); and the head is what the report says.
    raw = Tokenizer.from_file(str(target / "tokenizer.json"))
    raw.enable_truncation(MAX_LENGTH, strategy="longest_first")
    hf = AutoModelForSequenceClassification.from_pretrained(str(target)).eval()
    rows, worst_head = [], 0.0
    for (q, d), s, l, l1 in zip(ps, scores, logits, one_logits):
        features = ce.preprocess([[q, d]])
        ids = features["input_ids"][0].tolist()
        enc = raw.encode(q, d)
        assert enc.ids == ids, (name, q, d)
        if "token_type_ids" in input_names:
            assert enc.type_ids == features["token_type_ids"][0].tolist(), (name, q, d)
        else:
            assert "token_type_ids" not in features
        worst_head = max(worst_head, abs(manual_logit(name, hf, features) - float(l1)))
        rows.append({"query": q, "document": d, "tokens": len(ids), "score": f32(s), "logit": f32(l)})
    assert worst_head <= 1e-6, worst_head
    with open(target / "expected.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")

    n = [r["tokens"] for r in rows]
    print(
        f"{name}: tokens {min(n)}..{max(n)} ({sum(t == MAX_LENGTH for t in n)} at max_length), "
        f"logit {logits.min():.3f}..{logits.max():.3f} std {logits.std():.3f}, "
        f"score {scores.min():.4f}..{scores.max():.4f}, distinct {len(set(np.round(logits, 4)))}/{len(rows)}, "
        f"batch 1 vs {BATCH_SIZE}: logit {batch_diff[0]:.1e} score {batch_diff[1]:.1e}, hand-made head {worst_head:.1e}"
    )
    with safe_open(str(target / "model.safetensors"), "pt") as st:
        for key in sorted(st.keys()):
            if not any(part in key for part in ("encoder.layer.", "layers.", "embeddings")):
                print(f"    {key} {list(st.get_slice(key).get_shape())}")

    saved = json.loads((target / "config_sentence_transformers.json").read_text())
    return {
        "architecture": type(hf).__name__,
        "max_length": MAX_LENGTH,
        "activation": saved["activation_fn"],
        "score": "sigmoid(logit)",
        "classifier_pooling": pooling,
        "truncation": "longest_first",
        "token_type_ids": "token_type_ids" in input_names,
        "batch_size": BATCH_SIZE,
    }


def main() -> None:
    torch.set_num_threads(1)
    only = set(sys.argv[1:])
    meta_path = OUT / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["generated_by"] = {
        "script": "scripts/make-rerank-fixtures.py",
        "sentence_transformers": sentence_transformers.__version__,
        "transformers": transformers.__version__,
        "torch": torch.__version__.split("+")[0],
    }
    models = meta.setdefault("models", {})
    for name, spec in fixtures().items():
        if not only or name in only:
            models[name] = make(name, spec)
    meta["models"] = {k: models[k] for k in sorted(models)}
    meta_path.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
