#!/usr/bin/env python3
"""Makes the `gte` fixture: a small random-weight sentence-transformers model with the architecture
of Alibaba-NLP/gte-base-en-v1.5 and gte-large-en-v1.5 (config.json `model_type` "new", class
`NewModel`, a trust_remote_code model; gte-multilingual-base uses the same code), and
sentence-transformers' own embeddings of the distilbert fixture's texts as expected values.

The reference is the GTE team's own modeling code (configuration.py and modeling.py of the Hub
repository Alibaba-NLP/new-impl, which those models' config.json `auto_map` point at). It is not
committed: give the folder holding the two files.

    GTE_MODELING_DIR=/path/to/gte-code python scripts/make-gte-fixture.py [OUT_DIR]

with torch, transformers 5.25 and sentence-transformers 6.3 installed (torch stays out of CI: the
fixture is committed). The modeling files are used unchanged; what transformers 5 broke is put
back here:
  * `PreTrainedModel.get_extended_attention_mask` is gone; its transformers 4 behaviour (a
    (b, 1, 1, s) additive mask, 0 or finfo.min) is put back.
  * `from_pretrained` builds the model on the meta device and then fills the non-persistent
    buffers (`position_ids`, the rotary `inv_freq`, `cos_cached`, `sin_cached`) with
    `torch.empty_like` garbage, which the remote `_init_weights` never rewrites (it only knows
    Linear, Embedding and LayerNorm). After loading, the buffers are copied from a fresh
    instance built by the same code on the CPU, i.e. exactly what the constructor computes.
  * `rope_scaling` is now a deprecated alias of `rope_parameters`: a config.json written by
    transformers 5's `to_dict()` has no `rope_scaling` key, and reloading it would silently lose
    the NTK scaling. config.json is therefore written by hand with the keys of
    gte-base-en-v1.5's own config.json (`rope_scaling`, `rope_theta`, ...).
OUT_DIR defaults to aistack-core/tests/fixtures/arch/gte; the modeling files are copied into a
scratch folder, and into the fixture only while sentence-transformers loads it.

Config mirrors gte-base-en-v1.5 (gelu gated MLP, packed qkv with biases, rotary on all head
dims with base 500000 and fixed NTK scaling factor 2, post-norm LayerNorm eps 1e-12, no token
types, no absolute positions, 8192 positions, CLS pooling + Normalize), scaled down.
Tokenizer: the lowercase WordPiece tokenizer of the distilbert fixture (600 tokens, vocab padded
to 640 as gte pads 30522 to 30528).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import transformers.modeling_utils

ROOT = Path(__file__).resolve().parent.parent
SRC_FIXTURE = ROOT / "aistack-core/tests/fixtures/arch/distilbert"
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "aistack-core/tests/fixtures/arch/gte"
SEED = 20261208
INIT_RANGE = 0.2
MAX_SEQ = 128
PROMPTS = {"query": "query: "}
CODE_FILES = ("configuration.py", "modeling.py")

# Keys as in gte-base-en-v1.5's config.json, sizes scaled down. auto_map points at the files in
# the model folder (the real one names the Hub repository, "Alibaba-NLP/new-impl--modeling.NewModel").
CONFIG = {
    "architectures": ["NewModel"],
    "attention_probs_dropout_prob": 0.0,
    "auto_map": {
        "AutoConfig": "configuration.NewConfig",
        "AutoModel": "modeling.NewModel",
        "AutoModelForMaskedLM": "modeling.NewForMaskedLM",
        "AutoModelForMultipleChoice": "modeling.NewForMultipleChoice",
        "AutoModelForQuestionAnswering": "modeling.NewForQuestionAnswering",
        "AutoModelForSequenceClassification": "modeling.NewForSequenceClassification",
        "AutoModelForTokenClassification": "modeling.NewForTokenClassification",
    },
    "classifier_dropout": None,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,  # as the real model; inactive in eval
    "hidden_size": 64,
    "initializer_range": 0.02,
    "intermediate_size": 128,  # up_gate_proj is 2 * 128 wide
    "layer_norm_eps": 1e-12,
    "layer_norm_type": "layer_norm",
    "logn_attention_clip1": False,
    "logn_attention_scale": False,
    "max_position_embeddings": 8192,
    "model_type": "new",
    "num_attention_heads": 4,
    "num_hidden_layers": 2,
    "pack_qkv": True,
    "pad_token_id": 0,
    "position_embedding_type": "rope",
    "rope_scaling": {"factor": 2.0, "type": "ntk"},
    "rope_theta": 500000,
    "torch_dtype": "float32",
    "type_vocab_size": 0,
    "unpad_inputs": False,
    "use_memory_efficient_attention": False,
    "vocab_size": 640,
}


def get_extended_attention_mask(self, attention_mask, input_shape, device=None, dtype=None):
    """transformers 4's version for a 2-D or 3-D padding mask (gte's code calls it)."""
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


def restore_non_persistent_buffers(model: torch.nn.Module) -> None:
    """Copies every non-persistent buffer from a fresh CPU instance built by the same code."""
    with torch.device("cpu"):
        fresh = type(model)(model.config)
    fresh_buffers = dict(fresh.named_buffers())
    for mod_name, mod in model.named_modules():
        for b in list(mod._non_persistent_buffers_set):
            key = f"{mod_name}.{b}" if mod_name else b
            mod.register_buffer(b, fresh_buffers[key].clone(), persistent=False)
        if hasattr(mod, "max_seq_len_cached"):  # the rotary modules' cache length goes with the buffers
            mod.max_seq_len_cached = fresh.get_submodule(mod_name).max_seq_len_cached


_from_pretrained = transformers.modeling_utils.PreTrainedModel.from_pretrained.__func__


@classmethod
def from_pretrained(cls, *args, **kwargs):
    model = _from_pretrained(cls, *args, **kwargs)
    if type(model).__name__ == "NewModel":
        restore_non_persistent_buffers(model)
    return model


transformers.modeling_utils.PreTrainedModel.get_extended_attention_mask = get_extended_attention_mask
transformers.modeling_utils.PreTrainedModel.from_pretrained = from_pretrained

REF = Path(os.environ["GTE_MODELING_DIR"])
SCRATCH = Path(tempfile.mkdtemp(prefix="gte-code-"))
(SCRATCH / "gte_ref").mkdir()
(SCRATCH / "gte_ref" / "__init__.py").write_text("")
for f in CODE_FILES:
    shutil.copy(REF / f, SCRATCH / "gte_ref" / f)
sys.path.insert(0, str(SCRATCH))
from gte_ref.configuration import NewConfig  # noqa: E402
from gte_ref.modeling import NewModel  # noqa: E402


def widen(model: torch.nn.Module) -> None:
    """Wide random weights (as aistack's make-arch-fixtures.py) so texts are clearly apart."""
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * INIT_RANGE)
            elif "LayerNorm" in name or "_ln." in name:
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
    # A deep copy: transformers 5 adds "rope_type"/"rope_theta" to the rope_scaling dict it is given.
    cfg = NewConfig(**{k: v for k, v in copy.deepcopy(CONFIG).items() if k != "model_type"})
    model = NewModel(cfg, add_pooling_layer=False).eval()
    widen(model)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(OUT / "model.safetensors"), metadata={"format": "pt"})
    write_json(OUT / "config.json", CONFIG)
    # For sentence-transformers' trust_remote_code load only; removed again in main().
    for f in CODE_FILES:
        shutil.copy(REF / f, OUT / f)

    shutil.copy(SRC_FIXTURE / "tokenizer.json", OUT / "tokenizer.json")
    tc = json.loads((SRC_FIXTURE / "tokenizer_config.json").read_text())
    tc["model_max_length"] = 8192  # as gte-base-en-v1.5; sentence_bert_config's max_seq_length wins
    write_json(OUT / "tokenizer_config.json", tc)

    # sentence-transformers files, in the (legacy) form gte-base-en-v1.5 ships them.
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
        "word_embedding_dimension": CONFIG["hidden_size"],
        "pooling_mode_cls_token": True,
        "pooling_mode_mean_tokens": False,
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
# description against gte's code (it is not used for the expected values).
def independent_forward(w: dict[str, torch.Tensor], cfg: dict, ids: torch.Tensor, mask: torch.Tensor):
    d, h, L, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"], cfg["layer_norm_eps"]
    I = cfg["intermediate_size"]
    hd = d // h
    b, s = ids.shape
    # no token-type rows (type_vocab_size 0), no absolute positions
    x = w["embeddings.word_embeddings.weight"][ids]
    x = F.layer_norm(x, (d,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    # rotary, half split, on all hd dims, positions 0..s-1 over the padded row. Fixed NTK:
    # inv_freq[i] = (theta * f) ** (-2i/hd) / f ** (2/hd), i = 0..hd/2-1
    f, theta = cfg["rope_scaling"]["factor"], cfg["rope_theta"]
    inv = 1.0 / ((theta * f) ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)) / f ** (2 / hd)
    ang = torch.outer(torch.arange(s, dtype=torch.float32), inv)  # (s, hd/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)  # (s, hd)

    def rope(t):  # (b, h, s, hd)
        t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
        return t * cos + torch.cat([-t2, t1], -1) * sin

    bias = torch.where(mask[:, None, None, :].bool(), 0.0, float("-inf"))
    for i in range(L):
        p = f"encoder.layer.{i}."
        qkv = x @ w[p + "attention.qkv_proj.weight"].T + w[p + "attention.qkv_proj.bias"]
        q, k, v = qkv.view(b, s, 3, h, hd).permute(2, 0, 3, 1, 4)  # [q | k | v], each heads-major
        q, k = rope(q), rope(k)
        a = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5 + bias, -1) @ v
        a = a.transpose(1, 2).reshape(b, s, d) @ w[p + "attention.o_proj.weight"].T + w[p + "attention.o_proj.bias"]
        x = F.layer_norm(x + a, (d,), w[p + "attn_ln.weight"], w[p + "attn_ln.bias"], eps)
        ug = x @ w[p + "mlp.up_gate_proj.weight"].T  # no bias
        up, gate = ug[..., :I], ug[..., I:]
        m = (F.gelu(gate) * up) @ w[p + "mlp.down_proj.weight"].T + w[p + "mlp.down_proj.bias"]
        x = F.layer_norm(x + m, (d,), w[p + "mlp_ln.weight"], w[p + "mlp_ln.bias"], eps)
    return F.normalize(x[:, 0], dim=-1)  # CLS, no final norm


def main() -> None:
    from sentence_transformers import SentenceTransformer

    state = build()
    st = SentenceTransformer(str(OUT), device="cpu", trust_remote_code=True, local_files_only=True)
    print(st)
    assert st.max_seq_length == MAX_SEQ, st.max_seq_length
    model = st[0].auto_model
    print("module class:", type(model).__module__, type(model).__name__,
          "| attention:", type(model.encoder.layer[0].attention).__name__)
    # Make sure every weight really arrived (and nothing extra is expected).
    loaded = model.state_dict()
    assert set(loaded) == set(state), (set(loaded) ^ set(state))
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k
    # ... and that the rotary tables are the NTK-scaled ones the constructor builds.
    rot = model.embeddings.rotary_emb
    hd = CONFIG["hidden_size"] // CONFIG["num_attention_heads"]
    f = CONFIG["rope_scaling"]["factor"]
    inv = 1.0 / ((CONFIG["rope_theta"] * f) ** (torch.arange(0, hd, 2).float() / hd)) / f ** (2 / hd)
    assert type(rot).__name__ == "NTKScalingRotaryEmbedding" and torch.allclose(rot.inv_freq, inv), rot.inv_freq
    assert rot.cos_cached.shape == (int(CONFIG["max_position_embeddings"] * f), hd)
    assert torch.equal(model.embeddings.position_ids, torch.arange(CONFIG["max_position_embeddings"]))

    rows = [json.loads(l) for l in (SRC_FIXTURE / "expected.jsonl").read_text().splitlines() if l.strip()]
    texts = [r["text"] for r in rows]
    plain = st.encode(texts, batch_size=8, convert_to_numpy=True)
    with_prompts = {p: st.encode(texts, batch_size=8, convert_to_numpy=True, prompt_name=p) for p in PROMPTS}

    # Cross-checks: (a) gte's class called directly + CLS + normalize (one text at a time, no
    # padding), (b) the independent forward above, batched with padding, plain and prompted.
    w = load_file(str(OUT / "model.safetensors"))
    tok = st.tokenizer
    worst_a = worst_b = 0.0
    with torch.no_grad():
        for i, t in enumerate(texts):
            enc = tok([t], truncation=True, max_length=MAX_SEQ, return_tensors="pt")
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            v = F.normalize(out.last_hidden_state[:, 0], dim=-1)[0]
            worst_a = max(worst_a, (v - torch.from_numpy(plain[i])).abs().max().item())
        for prefix, ref in [("", plain)] + [(PROMPTS[p], with_prompts[p]) for p in PROMPTS]:
            for j in range(0, len(texts), 8):
                batch = [prefix + t for t in texts[j:j + 8]]
                enc = tok(batch, truncation=True, max_length=MAX_SEQ, padding=True, return_tensors="pt")
                assert (enc["attention_mask"] == 0).any() or len(batch) == 1
                v = independent_forward(w, CONFIG, enc["input_ids"], enc["attention_mask"])
                worst_b = max(worst_b, (v - torch.from_numpy(ref[j:j + 8])).abs().max().item())
    print(f"max |diff| direct-call vs ST: {worst_a:.2e}; independent forward vs ST: {worst_b:.2e}")
    assert worst_a < 1e-5 and worst_b < 1e-5

    with open(OUT / "expected.jsonl", "w") as fh:
        for i, t in enumerate(texts):
            n = int(st.tokenize([t])["input_ids"].shape[1])
            row = {"text": t, "tokens": n, "embedding": [round(float(x), 7) for x in plain[i]]}
            row["prompts"] = {p: [round(float(x), 7) for x in v[i]] for p, v in with_prompts.items()}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    sims = plain @ plain.T
    off = sims[~torch.eye(len(texts), dtype=torch.bool).numpy()]
    ntok = [int(st.tokenize([t])["input_ids"].shape[1]) for t in texts]
    print(f"{len(texts)} texts, tokens min {min(ntok)} max {max(ntok)} (truncated at {MAX_SEQ}: "
          f"{sum(n == MAX_SEQ for n in ntok)}); dims {plain.shape[1]}; "
          f"pairwise cosine mean {off.mean():.3f}, max {off.max():.3f}")
    for p, v in with_prompts.items():
        print(f"  prompt {p!r}: mean cosine to the plain embedding {float((v * plain).sum(1).mean()):.3f}")
    for k, v in state.items():
        print(f"  {k} {list(v.shape)} {v.dtype}")
    for f in CODE_FILES:
        (OUT / f).unlink()


if __name__ == "__main__":
    main()
