//! A tiny but real BERT sentence-transformers model, generated on the fly: a WordPiece tokenizer
//! over a few hundred pieces, two transformer layers of width 32 with pseudo-random weights from
//! a fixed seed, mean pooling and normalization. Its vectors mean nothing; everything around
//! them (loading, tokenizing, truncation, batching, caching, HTTP) works as with a real model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

/// Embedding dimensions (`hidden_size`) of the tiny model.
pub const TINY_DIMS: usize = 32;
/// Transformer layers of the tiny model.
pub const TINY_LAYERS: usize = 2;
/// Attention heads of the tiny model (head width 8).
pub const TINY_HEADS: usize = 4;
/// Width of the tiny model's feed-forward layers.
pub const TINY_INTERMEDIATE: usize = 64;
/// Position embeddings of the tiny model (`max_position_embeddings`).
pub const TINY_MAX_POSITIONS: usize = 128;
/// `max_seq_length` of the tiny model's `sentence_bert_config.json`: its `max_input_tokens`,
/// below [`TINY_MAX_POSITIONS`] so a test can tell which one the loader used.
pub const TINY_MAX_SEQ_LENGTH: usize = 64;

/// The seed of the weights; the same seed always writes the same bytes.
const SEED: u64 = 0x5EED_A157_AC4B_E127;

const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

/// Common English words, whole pieces of the vocabulary. Any other lowercase ASCII word still
/// tokenizes, into a letter and `##` letters.
const WORDS: &str = "\
the of and to in is was it for on are as with his they be at one have this from or had by \
not word but what some we can out other were all there when up use your how said an each she \
which do their time if will way about many then them write would like so these her long make \
thing see him two has look more day could go come did number sound no most people my over know \
water than call first who may down side been now find any new work part take get place made \
live where after back little only round man year came show every good me give our under name \
very through just form sentence great think say help low line differ turn cause much mean \
before move right boy old too same tell does set three want air well also play small end put \
home read hand port large spell add even land here must big high such follow act why ask men \
change went light kind off need house picture try us again animal point mother world near build \
self earth father head stand own page should country found answer school grow study still learn \
plant cover food sun four between state keep eye never last let thought city tree cross farm \
hard start might story saw far sea draw left late run while press close night real life few \
north open seem together next white children begin got walk example ease paper group always \
music those both mark often letter until mile river car feet care second book carry took \
science eat room friend began idea fish mountain stop once base hear horse cut sure watch color \
face wood main enough plain girl usual young ready above ever red list though feel talk bird \
soon body dog family direct pose leave song measure door product black short numeral class \
wind question happen complete ship area half rock order fire south problem piece told knew pass \
since top whole king space heard best hour better true during hundred five remember step early \
hold west ground interest reach fast verb sing listen six table travel less morning ten simple \
several vowel toward war lay against pattern slow center love person money serve appear road \
map rain rule govern pull cold notice voice unit power town fine certain fly fall lead cry dark \
machine note wait plan figure star box noun field rest correct able pound done beauty drive \
stood contain front teach week final gave green quick develop ocean warm free minute strong \
special mind behind clear tail produce fact street inch multiply nothing course stay wheel full \
force blue object decide surface deep moon island foot system busy test record boat common gold \
possible plane dry wonder laugh thousand ago ran check game shape hello search vector document \
query embed model text data index store server request token";

/// Continuation pieces beyond the single letters and digits.
const SUFFIXES: [&str; 16] = [
    "##s", "##es", "##ed", "##ing", "##er", "##ers", "##est", "##ly", "##tion", "##ment", "##ness",
    "##able", "##al", "##ful", "##less", "##y",
];

/// The vocabulary in id order: special tokens, single characters (so every ASCII word and
/// punctuation mark tokenizes), `##` pieces, then whole words; no duplicates.
fn vocabulary() -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut vocab = Vec::new();
    let mut push = |t: String| {
        if seen.insert(t.clone()) {
            vocab.push(t);
        }
    };
    SPECIAL.iter().for_each(|t| push(t.to_string()));
    // Lowercase letters and digits, then every printable ASCII punctuation mark (which
    // BertPreTokenizer splits into words of their own).
    let singles = ('a'..='z').chain('0'..='9').chain(
        (b'!'..=b'~')
            .map(char::from)
            .filter(|c| c.is_ascii_punctuation()),
    );
    for c in singles {
        push(c.to_string());
    }
    for c in ('a'..='z').chain('0'..='9') {
        push(format!("##{c}"));
    }
    SUFFIXES.iter().for_each(|t| push(t.to_string()));
    WORDS.split_whitespace().for_each(|w| push(w.to_string()));
    vocab
}

/// A small deterministic generator (xorshift64*), so the weights need no RNG crate and never
/// change between versions of one.
struct XorShift(u64);

impl XorShift {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f32 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let bits = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// `n` values uniform in [centre - spread, centre + spread).
    fn fill(&mut self, n: usize, centre: f32, spread: f32) -> Vec<f32> {
        (0..n).map(|_| centre + spread * self.next()).collect()
    }
}

/// Collects named tensors, drawing their values from one generator in a fixed order.
struct Weights {
    rng: XorShift,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Adds `name` with `shape`, values uniform in [centre - spread, centre + spread).
    fn put(&mut self, name: String, shape: &[usize], centre: f32, spread: f32) {
        let data = self.rng.fill(shape.iter().product(), centre, spread);
        let t = Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches the data");
        self.tensors.insert(name, t);
    }

    /// A linear layer `{p}.weight` `[out, inp]` with variance 1/inp (activations keep their
    /// scale) and a small `{p}.bias`.
    fn linear(&mut self, p: &str, out: usize, inp: usize) {
        self.put(
            format!("{p}.weight"),
            &[out, inp],
            0.0,
            (3.0 / inp as f32).sqrt(),
        );
        self.put(format!("{p}.bias"), &[out], 0.0, 0.02);
    }

    /// A layer norm `{p}.weight` near 1 and `{p}.bias` near 0.
    fn layer_norm(&mut self, p: &str) {
        self.put(format!("{p}.weight"), &[TINY_DIMS], 1.0, 0.1);
        self.put(format!("{p}.bias"), &[TINY_DIMS], 0.0, 0.05);
    }
}

/// Every tensor the BERT loader reads, with the names and shapes of a Hugging Face
/// `BertModel` checkpoint (no `bert.` prefix, as sentence-transformers saves them).
fn weights(vocab: usize) -> HashMap<String, Tensor> {
    let (h, i) = (TINY_DIMS, TINY_INTERMEDIATE);
    let mut w = Weights {
        rng: XorShift(SEED),
        tensors: HashMap::new(),
    };
    w.put(
        "embeddings.word_embeddings.weight".into(),
        &[vocab, h],
        0.0,
        1.0,
    );
    w.put(
        "embeddings.position_embeddings.weight".into(),
        &[TINY_MAX_POSITIONS, h],
        0.0,
        0.3,
    );
    w.put(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, h],
        0.0,
        0.1,
    );
    w.layer_norm("embeddings.LayerNorm");
    for l in 0..TINY_LAYERS {
        let p = format!("encoder.layer.{l}");
        for part in ["query", "key", "value"] {
            w.linear(&format!("{p}.attention.self.{part}"), h, h);
        }
        w.linear(&format!("{p}.attention.output.dense"), h, h);
        w.layer_norm(&format!("{p}.attention.output.LayerNorm"));
        w.linear(&format!("{p}.intermediate.dense"), i, h);
        w.linear(&format!("{p}.output.dense"), h, i);
        w.layer_norm(&format!("{p}.output.LayerNorm"));
    }
    w.tensors
}

/// `config.json`: a BERT encoder in Hugging Face's format.
fn config(vocab: usize) -> Value {
    json!({
        "_name_or_path": "aistack-testing/tiny-bert",
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": TINY_DIMS,
        "initializer_range": 0.02,
        "intermediate_size": TINY_INTERMEDIATE,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": TINY_MAX_POSITIONS,
        "model_type": "bert",
        "num_attention_heads": TINY_HEADS,
        "num_hidden_layers": TINY_LAYERS,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "use_cache": true,
        "vocab_size": vocab,
    })
}

/// `tokenizer.json`: BERT's uncased pipeline (BertNormalizer, BertPreTokenizer, WordPiece,
/// `[CLS] … [SEP]`) over `vocab`, in the format the `tokenizers` crate reads.
fn tokenizer(vocab: &[String]) -> Value {
    let id = |t: &str| {
        vocab
            .iter()
            .position(|v| v == t)
            .expect("special token in vocab")
    };
    let added: Vec<Value> = SPECIAL
        .iter()
        .map(|t| {
            json!({
                "id": id(t), "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": true,
            })
        })
        .collect();
    let ids: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let special = |t: &str| json!({"SpecialToken": {"id": t, "type_id": 0}});
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": true,
            "handle_chinese_chars": true,
            "strip_accents": null,
            "lowercase": true,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]"), {"Sequence": {"id": "A", "type_id": 0}}, special("[SEP]")],
            "pair": [
                special("[CLS]"),
                {"Sequence": {"id": "A", "type_id": 0}},
                special("[SEP]"),
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}},
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": ids,
        },
    })
}

fn write_json(path: &Path, value: &Value) {
    let text = serde_json::to_string_pretty(value).expect("JSON serializes");
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Writes the tiny model into `dir` (created if needed) and returns `dir`: `config.json`,
/// `tokenizer.json`, `model.safetensors`, `modules.json`, `1_Pooling/config.json` and
/// `sentence_bert_config.json`, byte-identical on every call. Panics if it cannot write.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let pooling = dir.join("1_Pooling");
    std::fs::create_dir_all(&pooling)
        .unwrap_or_else(|e| panic!("creating {}: {e}", pooling.display()));
    let vocab = vocabulary();
    write_json(&dir.join("config.json"), &config(vocab.len()));
    write_json(&dir.join("tokenizer.json"), &tokenizer(&vocab));
    let weights_path = dir.join("model.safetensors");
    candle_core::safetensors::save(&weights(vocab.len()), &weights_path)
        .unwrap_or_else(|e| panic!("writing {}: {e}", weights_path.display()));
    write_json(
        &dir.join("modules.json"),
        &json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]),
    );
    write_json(
        &pooling.join("config.json"),
        &json!({
            "word_embedding_dimension": TINY_DIMS,
            "pooling_mode_cls_token": false,
            "pooling_mode_mean_tokens": true,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        }),
    );
    write_json(
        &dir.join("sentence_bert_config.json"),
        &json!({"max_seq_length": TINY_MAX_SEQ_LENGTH, "do_lower_case": false}),
    );
    dir.to_path_buf()
}

/// The tiny model written into its own temporary directory, removed on drop.
pub struct TinyModel {
    dir: tempfile::TempDir,
}

impl TinyModel {
    /// Writes the tiny model into a fresh temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("aistack-tiny-model-")
            .tempdir()
            .expect("a temporary directory");
        tiny_model(dir.path());
        Self { dir }
    }

    /// The model directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory as a model spec string, for `EmbedSettings::model` or `--model`.
    pub fn spec(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Tokens in the tokenizer's vocabulary (the model's `vocab_size`).
    pub fn vocab_size(&self) -> usize {
        vocabulary().len()
    }
}

impl Default for TinyModel {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_unique_and_starts_with_the_special_tokens() {
        let v = vocabulary();
        assert_eq!(&v[..5], SPECIAL.map(String::from).as_slice());
        let unique: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(unique.len(), v.len());
        for c in ('a'..='z').chain('0'..='9') {
            assert!(v.contains(&c.to_string()) && v.contains(&format!("##{c}")));
        }
        assert!(v.contains(&",".to_string()) && v.contains(&"~".to_string()));
        assert!(v.len() > 300, "{} pieces", v.len());
    }

    #[test]
    fn the_generator_is_uniform_in_range_and_seeded() {
        let mut a = XorShift(SEED);
        let xs = a.fill(10_000, 0.0, 1.0);
        assert!(xs.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert_eq!(XorShift(SEED).fill(8, 0.0, 1.0), xs[..8].to_vec());
        assert_ne!(XorShift(SEED + 1).fill(8, 0.0, 1.0), xs[..8].to_vec());
    }

    #[test]
    fn weights_have_the_bert_names_and_shapes() {
        let w = weights(100);
        // 5 embedding tensors + 16 per layer.
        assert_eq!(w.len(), 5 + 16 * TINY_LAYERS);
        let dims = |n: &str| w[n].dims().to_vec();
        assert_eq!(dims("embeddings.word_embeddings.weight"), [100, TINY_DIMS]);
        assert_eq!(
            dims("encoder.layer.1.intermediate.dense.weight"),
            [TINY_INTERMEDIATE, TINY_DIMS]
        );
        assert_eq!(
            dims("encoder.layer.1.output.dense.weight"),
            [TINY_DIMS, TINY_INTERMEDIATE]
        );
        let gamma: Vec<f32> = w["encoder.layer.0.output.LayerNorm.weight"]
            .to_vec1()
            .unwrap();
        assert!(gamma.iter().all(|g| (0.9..=1.1).contains(g)));
    }
}
