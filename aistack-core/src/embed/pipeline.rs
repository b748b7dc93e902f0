//! The sentence-transformers modules after the transformer, as `modules.json` lists them:
//! `Pooling` (every mode, combined in order, with `include_prompt`), `Dense` layers with their
//! activation, and `Normalize`.

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::arch::tensor;
use super::kernels::linear::{linear, Panels};
use super::source::{read_json, DenseFiles, ModelFiles, ModuleEntry};
use crate::error::{Error, Result};

/// How token vectors become one sentence vector: sentence-transformers' pooling modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The first token's vector (`[CLS]`; the first token after the prompt when the prompt is
    /// excluded).
    Cls,
    /// The elementwise maximum over the tokens.
    Max,
    /// The mean of the token vectors.
    Mean,
    /// The sum of the token vectors over the square root of their count.
    MeanSqrtLen,
    /// The mean weighted by position (1 for the first token, 2 for the second, …).
    WeightedMean,
    /// The last token's vector (decoder models).
    LastToken,
}

impl Pooling {
    /// The mode's name in sentence-transformers' config (`pooling_mode`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Cls => "cls",
            Self::Max => "max",
            Self::Mean => "mean",
            Self::MeanSqrtLen => "mean_sqrt_len_tokens",
            Self::WeightedMean => "weightedmean",
            Self::LastToken => "lasttoken",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "cls" => Self::Cls,
            "max" => Self::Max,
            "mean" => Self::Mean,
            "mean_sqrt_len_tokens" => Self::MeanSqrtLen,
            "weightedmean" => Self::WeightedMean,
            "lasttoken" => Self::LastToken,
            _ => return None,
        })
    }

    /// Pools one sequence's `rows` (`len × h`), leaving out its first `skip` tokens (a prompt
    /// excluded from pooling).
    fn pool(self, rows: &[f32], h: usize, skip: usize, out: &mut Vec<f32>) {
        let len = rows.len() / h;
        let skip = skip.min(len);
        let kept = &rows[skip * h..];
        let start = out.len();
        match self {
            Self::Cls => match kept.get(..h) {
                Some(first) => out.extend_from_slice(first),
                // Every token masked: sentence-transformers' argmax falls on the first one.
                None => out.extend_from_slice(&rows[..h]),
            },
            Self::LastToken => match kept.len() {
                0 => out.extend(std::iter::repeat_n(0.0, h)),
                n => out.extend_from_slice(&kept[n - h..]),
            },
            Self::Max => {
                out.extend(std::iter::repeat_n(f32::NEG_INFINITY, h));
                for r in kept.chunks_exact(h) {
                    out[start..]
                        .iter_mut()
                        .zip(r)
                        .for_each(|(a, &b)| *a = a.max(b));
                }
            }
            Self::Mean | Self::MeanSqrtLen | Self::WeightedMean => {
                out.extend(std::iter::repeat_n(0.0, h));
                let mut total = 0f32;
                for (i, r) in kept.chunks_exact(h).enumerate() {
                    let w = match self {
                        Self::WeightedMean => (skip + i + 1) as f32,
                        _ => 1.0,
                    };
                    total += w;
                    out[start..]
                        .iter_mut()
                        .zip(r)
                        .for_each(|(a, &b)| *a += w * b);
                }
                let total = total.max(1e-9);
                let div = match self {
                    Self::MeanSqrtLen => total.sqrt(),
                    _ => total,
                };
                out[start..].iter_mut().for_each(|a| *a /= div);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ModeField {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct PoolingConfig {
    pooling_mode: Option<ModeField>,
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
    #[serde(default = "yes")]
    include_prompt: bool,
}

fn yes() -> bool {
    true
}

impl PoolingConfig {
    /// The modes in concatenation order: `pooling_mode` as given, else the older boolean keys
    /// in sentence-transformers' fixed order, else mean.
    fn modes(&self, path: &Path) -> Result<Vec<Pooling>> {
        let names: Vec<String> = match &self.pooling_mode {
            Some(ModeField::One(m)) => vec![m.clone()],
            Some(ModeField::Many(m)) => m.clone(),
            None => [
                (self.pooling_mode_cls_token, "cls"),
                (self.pooling_mode_max_tokens, "max"),
                (self.pooling_mode_mean_tokens, "mean"),
                (
                    self.pooling_mode_mean_sqrt_len_tokens,
                    "mean_sqrt_len_tokens",
                ),
                (self.pooling_mode_weightedmean_tokens, "weightedmean"),
                (self.pooling_mode_lasttoken, "lasttoken"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| n.to_string())
            .collect(),
        };
        if names.is_empty() {
            return Ok(vec![Pooling::Mean]);
        }
        names
            .iter()
            .map(|n| {
                Pooling::from_name(n).ok_or_else(|| {
                    Error::model(
                        format!(
                            "{}: pooling mode '{n}' is unknown (cls, max, mean, \
                             mean_sqrt_len_tokens, weightedmean, lasttoken)",
                            path.display()
                        ),
                        "unsupported pooling",
                    )
                })
            })
            .collect()
    }
}

/// A `Dense` module's activation, by the PyTorch class sentence-transformers saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Identity,
    Tanh,
    Relu,
    Gelu,
    Sigmoid,
    Silu,
}

impl Activation {
    fn from_class(name: &str) -> Option<Self> {
        Some(match name.rsplit('.').next().unwrap_or(name) {
            "Identity" => Self::Identity,
            "Tanh" => Self::Tanh,
            "ReLU" => Self::Relu,
            "GELU" => Self::Gelu,
            "Sigmoid" => Self::Sigmoid,
            "SiLU" => Self::Silu,
            _ => return None,
        })
    }

    fn apply(self, v: &mut [f32]) {
        match self {
            Self::Identity => {}
            Self::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
            Self::Relu => v.iter_mut().for_each(|x| *x = x.max(0.0)),
            Self::Gelu => super::kernels::simd::gelu_erf(v),
            Self::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            Self::Silu => v.iter_mut().for_each(|x| *x /= 1.0 + (-*x).exp()),
        }
    }
}

#[derive(Deserialize)]
struct DenseConfig {
    in_features: usize,
    out_features: usize,
    #[serde(default = "yes")]
    bias: bool,
    activation_function: Option<String>,
}

/// A `Dense` module: `act(W·x + b)`.
struct Dense {
    w: Panels,
    b: Vec<f32>,
    input: usize,
    output: usize,
    act: Activation,
}

impl Dense {
    fn load(files: &DenseFiles) -> Result<Self> {
        let c: DenseConfig = read_json(&files.config)?;
        let act = match c.activation_function.as_deref() {
            // sentence-transformers' default when the config names none.
            None => Activation::Tanh,
            Some(name) => Activation::from_class(name).ok_or_else(|| {
                Error::model(
                    format!(
                        "{}: activation_function '{name}' is not supported (Identity, Tanh, \
                         ReLU, GELU, Sigmoid, SiLU)",
                        files.config.display()
                    ),
                    "unsupported Dense activation",
                )
            })?,
        };
        let device = Device::Cpu;
        let bad = |e: candle_core::Error| {
            Error::model(
                format!(
                    "{} does not hold the Dense layer {} → {}",
                    files.weights.display(),
                    c.in_features,
                    c.out_features
                ),
                e,
            )
        };
        let vb = if files.weights.extension().is_some_and(|e| e == "bin") {
            VarBuilder::from_pth(&files.weights, DType::F32, &device).map_err(bad)?
        } else {
            let bytes = std::fs::read(&files.weights)
                .map_err(|e| Error::io(files.weights.display().to_string(), e))?;
            VarBuilder::from_buffered_safetensors(bytes, DType::F32, &device).map_err(bad)?
        };
        let lin = vb.pp("linear");
        let w = tensor(&lin, (c.out_features, c.in_features), "weight").map_err(bad)?;
        let b = if c.bias {
            tensor(&lin, c.out_features, "bias").map_err(bad)?
        } else {
            vec![0.0; c.out_features]
        };
        Ok(Self {
            w: Panels::new(&w, c.out_features, c.in_features),
            b,
            input: c.in_features,
            output: c.out_features,
            act,
        })
    }
}

/// The modules after the transformer.
pub(crate) struct Pipeline {
    /// Pooling modes, concatenated in this order.
    pub pooling: Vec<Pooling>,
    /// Whether a prompt's tokens count in pooling.
    pub include_prompt: bool,
    dense: Vec<Dense>,
    /// Whether a `Normalize` module ends the pipeline.
    pub normalize: bool,
    dims: usize,
}

impl Pipeline {
    /// Reads the modules of `files` for a transformer with `hidden`-wide token states. A module
    /// aistack cannot run, or one that does not fit the one before, is refused by name.
    pub(crate) fn load(files: &ModelFiles, hidden: usize) -> Result<Self> {
        let (pooling, include_prompt) = match &files.pooling {
            None => (vec![Pooling::Mean], true),
            Some(p) => {
                let c: PoolingConfig = read_json(p)?;
                (c.modes(p)?, c.include_prompt)
            }
        };
        let mut normalize = false;
        if let Some(m) = &files.modules {
            let entries: Vec<ModuleEntry> = read_json(m)?;
            for e in &entries {
                let kind = e.kind.rsplit('.').next().unwrap_or(&e.kind);
                match kind {
                    "Transformer" | "Pooling" | "Dense" => {}
                    "Normalize" => normalize = true,
                    other => {
                        return Err(Error::model(
                            format!(
                                "{}: module {other} is not supported (Transformer, Pooling, \
                                 Dense, Normalize)",
                                m.display()
                            ),
                            "unsupported sentence-transformers module",
                        ))
                    }
                }
            }
        }
        let dense = files
            .dense
            .iter()
            .map(Dense::load)
            .collect::<Result<Vec<_>>>()?;
        let mut dims = hidden * pooling.len();
        for (d, f) in dense.iter().zip(&files.dense) {
            if d.input != dims {
                return Err(Error::model(
                    format!(
                        "{}: the Dense layer takes {} features but receives {dims}",
                        f.config.display(),
                        d.input
                    ),
                    "modules do not fit together",
                ));
            }
            dims = d.output;
        }
        Ok(Self {
            pooling,
            include_prompt,
            dense,
            normalize,
            dims,
        })
    }

    /// Length of the vectors the pipeline gives.
    pub(crate) fn dims(&self) -> usize {
        self.dims
    }

    /// One sequence's sentence vector before `Normalize`: its final token states `rows`
    /// (`len × h`) pooled (leaving out `prompt` tokens when the prompt is excluded), then
    /// through the Dense layers.
    pub(crate) fn pooled(&self, rows: &[f32], h: usize, prompt: usize) -> Vec<f32> {
        let skip = if self.include_prompt { 0 } else { prompt };
        let mut v = Vec::with_capacity(h * self.pooling.len());
        for mode in &self.pooling {
            mode.pool(rows, h, skip, &mut v);
        }
        for d in &self.dense {
            let mut out = vec![0f32; d.output];
            linear(&v, &d.w, &d.b, &mut out, 1, gemm::Parallelism::None);
            d.act.apply(&mut out);
            v = out;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(mode: Pooling, rows: &[f32], h: usize, skip: usize) -> Vec<f32> {
        let mut v = Vec::new();
        mode.pool(rows, h, skip, &mut v);
        v
    }

    #[test]
    fn each_mode_pools_as_sentence_transformers_does() {
        // Three tokens of width 2.
        let rows = [1.0, -4.0, 3.0, 2.0, 5.0, 0.0];
        assert_eq!(pool(Pooling::Cls, &rows, 2, 0), vec![1.0, -4.0]);
        assert_eq!(pool(Pooling::LastToken, &rows, 2, 0), vec![5.0, 0.0]);
        assert_eq!(pool(Pooling::Max, &rows, 2, 0), vec![5.0, 2.0]);
        assert_eq!(pool(Pooling::Mean, &rows, 2, 0), vec![3.0, -2.0 / 3.0]);
        let s = 3f32.sqrt();
        assert_eq!(
            pool(Pooling::MeanSqrtLen, &rows, 2, 0),
            vec![9.0 / s, -2.0 / s]
        );
        // Weights 1, 2, 3.
        assert_eq!(
            pool(Pooling::WeightedMean, &rows, 2, 0),
            vec![22.0 / 6.0, 0.0]
        );
        // The first token excluded (a prompt): weights keep their positions, 2 and 3.
        assert_eq!(pool(Pooling::Cls, &rows, 2, 1), vec![3.0, 2.0]);
        assert_eq!(pool(Pooling::Mean, &rows, 2, 1), vec![4.0, 1.0]);
        assert_eq!(
            pool(Pooling::WeightedMean, &rows, 2, 1),
            vec![21.0 / 5.0, 4.0 / 5.0]
        );
    }

    #[test]
    fn modes_come_from_either_config_form_in_order() {
        let p = Path::new("1_Pooling/config.json");
        let c: PoolingConfig =
            serde_json::from_str(r#"{"pooling_mode": ["lasttoken", "cls"]}"#).unwrap();
        assert_eq!(c.modes(p).unwrap(), vec![Pooling::LastToken, Pooling::Cls]);
        let c: PoolingConfig = serde_json::from_str(
            r#"{"pooling_mode_mean_tokens": true, "pooling_mode_cls_token": true,
                "include_prompt": false}"#,
        )
        .unwrap();
        assert_eq!(c.modes(p).unwrap(), vec![Pooling::Cls, Pooling::Mean]);
        assert!(!c.include_prompt);
        let c: PoolingConfig = serde_json::from_str(r#"{"word_embedding_dimension": 4}"#).unwrap();
        assert_eq!(c.modes(p).unwrap(), vec![Pooling::Mean]);
        let c: PoolingConfig = serde_json::from_str(r#"{"pooling_mode": "median"}"#).unwrap();
        let err = c.modes(p).unwrap_err().to_string();
        assert!(err.contains("'median'"), "{err}");
    }

    #[test]
    fn activations_by_their_pytorch_class() {
        assert_eq!(
            Activation::from_class("torch.nn.modules.activation.Tanh"),
            Some(Activation::Tanh)
        );
        assert_eq!(
            Activation::from_class("torch.nn.modules.linear.Identity"),
            Some(Activation::Identity)
        );
        assert_eq!(Activation::from_class("my.Custom"), None);
        let mut v = [0.5f32, -2.0];
        Activation::Tanh.apply(&mut v);
        assert!((v[0] - 0.5f32.tanh()).abs() < 1e-7 && (v[1] - (-2f32).tanh()).abs() < 1e-7);
    }
}
