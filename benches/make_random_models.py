#!/usr/bin/env python3
"""Writes base-size sentence-transformers models with random weights, for speed comparisons
where the real weights cannot be had here (speed does not depend on the values): XLM-RoBERTa
base and ModernBERT base, with all-mpnet-base-v2's tokenizer (its special ids, <s> 0, <pad> 1,
</s> 2, are RoBERTa's, and it splits English into as many tokens as theirs do).

Needs torch, transformers and sentence-transformers (not in CI); see docs/benchmarks.md.

Usage: python3 benches/make_random_models.py OUT_DIR
       then: python3 benches/compare_st.py --model OUT_DIR/xlm-roberta-base-random
"""
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from transformers import AutoModel, ModernBertConfig, PreTrainedTokenizerFast, XLMRobertaConfig

ROOT = Path(__file__).resolve().parent.parent


def main():
    out = Path(sys.argv[1])
    mpnet = Path(subprocess.check_output([ROOT / "scripts/ensure-model", "mpnet"], text=True).strip())
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(mpnet / "tokenizer.json"),
        bos_token="<s>", eos_token="</s>", unk_token="[UNK]", pad_token="<pad>",
        cls_token="<s>", sep_token="</s>", mask_token="<mask>", model_max_length=512,
    )
    vocab = 30527
    configs = {
        "xlm-roberta-base-random": XLMRobertaConfig(
            vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
            intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
            bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
        ),
        "modernbert-base-random": ModernBertConfig(
            vocab_size=vocab, hidden_size=768, intermediate_size=1152, num_hidden_layers=22,
            num_attention_heads=12, max_position_embeddings=8192, local_attention=128,
            global_attn_every_n_layers=3, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            cls_token_id=0, sep_token_id=2,
        ),
    }
    torch.manual_seed(0)
    for name, config in configs.items():
        work = out / f".{name}"
        shutil.rmtree(work, ignore_errors=True)
        AutoModel.from_config(config).save_pretrained(work, safe_serialization=True)
        tok.save_pretrained(work)
        transformer = Transformer(str(work), max_seq_length=256)
        dim = transformer.get_embedding_dimension()
        st = SentenceTransformer(modules=[transformer, Pooling(dim, pooling_mode="mean"), Normalize()])
        shutil.rmtree(out / name, ignore_errors=True)
        st.save(str(out / name))
        shutil.rmtree(work)
        print(out / name)


if __name__ == "__main__":
    main()
