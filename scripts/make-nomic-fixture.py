#!/usr/bin/env python3
"""Makes the `nomic_bert` fixture: a small random-weight sentence-transformers model with the
architecture of nomic-ai/nomic-embed-text-v1 and v1.5 (a trust_remote_code model), and
sentence-transformers' own embeddings of the distilbert fixture's texts as expected values.

The reference is nomic's own Hugging Face modeling code (configuration_hf_nomic_bert.py and
modeling_hf_nomic_bert.py, published with nomic-ai/nomic-bert-2048 and the nomic-embed-text
models; the same math is in github.com/nomic-ai/contrastors, src/contrastors/models/huggingface).
It is not committed: give the folder holding the two files.

    NOMIC_MODELING_DIR=/path/to/nomic-code python scripts/make-nomic-fixture.py [OUT_DIR]

with torch, transformers 5.25, sentence-transformers 6.3 and einops installed (torch stays out
of CI: the fixture is committed). transformers 5 dropped `get_extended_attention_mask`, which
nomic's code calls; its transformers 4 behaviour is put back on `PreTrainedModel` here, the
modeling files themselves are used unchanged. OUT_DIR defaults to
aistack-core/tests/fixtures/arch/nomic-bert; the modeling files are copied into a scratch folder
beside it, not into the fixture.

Config mirrors nomic-embed-text-v1.5 (swiglu, rotary on all head dims, base 1000, no linear
biases, post-norm, eps 1e-12, 2 token types, vocab padded to a multiple of 64), scaled down.
Tokenizer: the lowercase WordPiece tokenizer of the distilbert fixture (600 tokens).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import os
import tempfile

import transformers.modeling_utils

ROOT = Path(__file__).resolve().parent.parent
SRC_FIXTURE = ROOT / "aistack-core/tests/fixtures/arch/distilbert"
OUT = (
    Path(sys.argv[1])
    if len(sys.argv) > 1
    else ROOT / "aistack-core/tests/fixtures/arch/nomic-bert"
)
SEED = 20261207
INIT_RANGE = 0.2
MAX_SEQ = 128
PROMPTS = {"search_query": "search_query: ", "search_document": "search_document: "}
CODE_FILES = ("configuration_hf_nomic_bert.py", "modeling_hf_nomic_bert.py")


def get_extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
    """transformers 4's version for a 2-D or 3-D padding mask (nomic's code calls it)."""
    if dtype is None:
        dtype = self.dtype
    if attention_mask is None:
        attention_mask = torch.ones(input_shape, device=device)
    if attention_mask.dim() == 3:
        extended = attention_mask[:, None, :, :]
    elif attention_mask.dim() == 2:
        extended = attention_mask[:, None, None, :]
    else:
        raise ValueError(f"Wrong shape for attention_mask (shape {attention_mask.shape})")
    extended = extended.to(dtype=dtype)
    return (1.0 - extended) * torch.finfo(dtype).min


transformers.modeling_utils.PreTrainedModel.get_extended_attention_mask = get_extended_attention_mask

REF = Path(os.environ["NOMIC_MODELING_DIR"])
SCRATCH = Path(tempfile.mkdtemp(prefix="nomic-code-"))
(SCRATCH / "nomic_bert_ref").mkdir()
(SCRATCH / "nomic_bert_ref" / "__init__.py").write_text("")
for f in CODE_FILES:
    shutil.copy(REF / f, SCRATCH / "nomic_bert_ref" / f)
sys.path.insert(0, str(SCRATCH))
from nomic_bert_ref.configuration_hf_nomic_bert import NomicBertConfig  # noqa: E402
from nomic_bert_ref.modeling_hf_nomic_bert import NomicBertModel  # noqa: E402


def config() -> NomicBertConfig:
    # Keys as in nomic-embed-text-v1.5's config.json, sizes scaled down.
    return NomicBertConfig(
        activation_function="swiglu",
        architectures=["NomicBertModel"],
        auto_map={
            "AutoConfig": "configuration_hf_nomic_bert.NomicBertConfig",
            "AutoModel": "modeling_hf_nomic_bert.NomicBertModel",
            "AutoModelForMaskedLM": "modeling_hf_nomic_bert.NomicBertForPreTraining",
        },
        attn_pdrop=0.0,
        embd_pdrop=0.0,
        resid_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=None,
        eos_token_id=None,
        causal=False,
        dense_seq_output=True,
        fused_bias_fc=True,  # ignored by the HF code (no flash-attn kernels); as in v1.5
        fused_dropout_add_ln=True,  # likewise
        use_flash_attn=True,  # likewise: the HF code always uses torch SDPA
        use_xentropy=True,
        initializer_range=0.02,
        layer_norm_epsilon=1e-12,
        max_trained_positions=2048,
        mlp_fc1_bias=False,
        mlp_fc2_bias=False,
        n_embd=64,
        n_head=4,
        n_inner=256,  # NB: the gated MLP rounds n_inner UP to a multiple of 256
        n_layer=2,
        n_positions=8192,
        pad_vocab_size_multiple=64,
        parallel_block=False,
        parallel_block_tied_norm=False,
        prenorm=False,
        qkv_proj_bias=False,
        rotary_emb_base=1000,
        rotary_emb_fraction=1.0,
        rotary_emb_interleaved=False,
        rotary_emb_scale_base=None,
        rotary_scaling_factor=None,
        type_vocab_size=2,
        use_rms_norm=False,
        vocab_size=600,  # NomicBertModel pads it to 640 (pad_vocab_size_multiple), as 30522 -> 30528
    )


def widen(model: torch.nn.Module) -> None:
    """Wide random weights (as aistack's make-arch-fixtures.py) so texts are clearly apart."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * INIT_RANGE)
            elif "norm" in name.lower() or "emb_ln" in name:
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def build() -> dict[str, torch.Tensor]:
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    torch.manual_seed(SEED)
    cfg = config()
    model = NomicBertModel(cfg, add_pooling_layer=False).eval()
    widen(model)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / "model.safetensors"), metadata={"format": "pt"})
    d = cfg.to_dict()
    d.pop("transformers_version", None)
    d.pop("dtype", None)
    d["torch_dtype"] = "float32"
    write_json(OUT / "config.json", d)
    # For sentence-transformers' trust_remote_code load only; removed again in main().
    for f in CODE_FILES:
        shutil.copy(REF / f, OUT / f)

    shutil.copy(SRC_FIXTURE / "tokenizer.json", OUT / "tokenizer.json")
    tc = json.loads((SRC_FIXTURE / "tokenizer_config.json").read_text())
    tc["model_max_length"] = 8192  # as v1.5; sentence_bert_config's max_seq_length wins
    write_json(OUT / "tokenizer_config.json", tc)

    # sentence-transformers files, in the (legacy) form nomic-embed-text-v1.5 ships them.
    write_json(OUT / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(OUT / "sentence_bert_config.json", {"max_seq_length": MAX_SEQ, "do_lower_case": False})
    write_json(OUT / "config_sentence_transformers.json", {
        "__version__": {"sentence_transformers": "6.3.0", "transformers": "5.25.0", "pytorch": torch.__version__},
        "prompts": PROMPTS,
        "default_prompt_name": None,
        "similarity_fn_name": "cosine",
    })
    (OUT / "1_Pooling").mkdir()
    write_json(OUT / "1_Pooling" / "config.json", {
        "word_embedding_dimension": cfg.n_embd,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    (OUT / "2_Normalize").mkdir()
    return state


# ---------------------------------------------------------------------------------------------
# An independent plain-torch forward written from the description in the report, to check that
# description against nomic's code (it is not used for the expected values).
def independent_forward(w: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor, mask: torch.Tensor):
    d, h, L, eps = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["layer_norm_epsilon"]
    hd = d // h
    b, s = ids.shape
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.token_type_embeddings.weight"][0]
    x = F.layer_norm(x, (d,), w["emb_ln.weight"], w["emb_ln.bias"], eps)
    # rotary, GPT-NeoX style (half split), on all hd dims, positions 0..s-1 counted over the padded row
    inv = 1.0 / (cfg["rotary_emb_base"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(s, dtype=torch.float32), inv)  # (s, hd/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)  # (s, hd)

    def rope(t):  # (b, h, s, hd)
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    bias = torch.where(mask[:, None, None, :].bool(), 0.0, float("-inf"))
    for i in range(L):
        p = f"encoder.layers.{i}."
        qkv = x @ w[p + "attn.Wqkv.weight"].T  # (b, s, 3d): [q | k | v], each heads-major
        q, k, v = qkv.view(b, s, 3, h, hd).permute(2, 0, 3, 1, 4)
        q, k = rope(q), rope(k)
        a = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5 + bias, -1) @ v
        a = a.transpose(1, 2).reshape(b, s, d) @ w[p + "attn.out_proj.weight"].T
        x = F.layer_norm(x + a, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        up = x @ w[p + "mlp.fc11.weight"].T
        gate = x @ w[p + "mlp.fc12.weight"].T
        m = (up * F.silu(gate)) @ w[p + "mlp.fc2.weight"].T
        x = F.layer_norm(x + m, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
    mk = mask[..., None].float()
    pooled = (x * mk).sum(1) / mk.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, dim=-1)


def main() -> None:
    from sentence_transformers import SentenceTransformer

    state = build()
    st = SentenceTransformer(str(OUT), device="cpu", trust_remote_code=True, local_files_only=True)
    print(st)
    assert st.max_seq_length == MAX_SEQ, st.max_seq_length
    # nomic's from_pretrained loads with strict=False: make sure every weight really arrived.
    loaded = st[0].auto_model.state_dict()
    assert set(loaded) == set(state), (set(loaded) ^ set(state))
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    print("module class:", type(st[0].auto_model).__module__, type(st[0].auto_model).__name__)

    rows = [json.loads(l) for l in (SRC_FIXTURE / "expected.jsonl").read_text().splitlines() if l.strip()]
    texts = [r["text"] for r in rows]
    plain = st.encode(texts, batch_size=8, convert_to_numpy=True)
    with_prompts = {p: st.encode(texts, batch_size=8, convert_to_numpy=True, prompt_name=p) for p in PROMPTS}

    # Cross-checks: (a) nomic's class called directly + mean pooling + normalize (one text at a time,
    # no padding), (b) the independent forward above, batched with padding.
    cfg = json.loads((OUT / "config.json").read_text())
    w = load_file(str(OUT / "model.safetensors"))
    tok = st.tokenizer
    worst_a = worst_b = 0.0
    with torch.no_grad():
        for i, t in enumerate(texts):
            enc = tok([t], truncation=True, max_length=MAX_SEQ, return_tensors="pt")
            out = st[0].auto_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            v = F.normalize(out.last_hidden_state.mean(1), dim=-1)[0]
            worst_a = max(worst_a, (v - torch.from_numpy(plain[i])).abs().max().item())
        for j in range(0, len(texts), 8):
            enc = tok(texts[j:j + 8], truncation=True, max_length=MAX_SEQ, padding=True, return_tensors="pt")
            v = independent_forward(w, cfg, enc["input_ids"], enc["attention_mask"])
            worst_b = max(worst_b, (v - torch.from_numpy(plain[j:j + 8])).abs().max().item())
    print(f"max |diff| direct-call vs ST: {worst_a:.2e}; independent forward vs ST: {worst_b:.2e}")
    assert worst_a < 1e-5 and worst_b < 1e-5

    with open(OUT / "expected.jsonl", "w") as f:
        for i, t in enumerate(texts):
            n = int(st.tokenize([t])["input_ids"].shape[1])
            row = {"text": t, "tokens": n, "embedding": [round(float(x), 7) for x in plain[i]]}
            row["prompts"] = {p: [round(float(x), 7) for x in v[i]] for p, v in with_prompts.items()}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    sims = plain @ plain.T
    off = sims[~torch.eye(len(texts), dtype=torch.bool).numpy()]
    ntok = [int(st.tokenize([t])["input_ids"].shape[1]) for t in texts]
    print(f"{len(texts)} texts, tokens min {min(ntok)} max {max(ntok)} (truncated at {MAX_SEQ}: "
          f"{sum(n == MAX_SEQ for n in ntok)}); dims {plain.shape[1]}; "
          f"pairwise cosine mean {off.mean():.3f}, max {off.max():.3f}")
    for k, v in state.items():
        print(f"  {k} {list(v.shape)} {v.dtype}")
    for f in CODE_FILES:
        (OUT / f).unlink()


if __name__ == "__main__":
    main()
