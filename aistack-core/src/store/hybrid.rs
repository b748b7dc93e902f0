//! Search modes and reciprocal rank fusion: how a hybrid search merges the ranked list of its
//! vector arm with that of its lexical (BM25) arm. Every backend fuses with these definitions
//! (PostgreSQL in SQL, with the same formula), so a hybrid search ranks the same everywhere.
//!
//! A hit's fused score is `Σ wᵢ / (k + rankᵢ)` over the arms that found it (ranks from 1), with
//! `k = 60` by default (Cormack et al., 2009); equal scores are ordered by id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::Hit;
use crate::error::{Error, Result};

/// How a search ranks records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest vectors (the default).
    #[default]
    Vector,
    /// BM25 over the records' text only.
    Lexical,
    /// Both, fused by reciprocal rank.
    Hybrid,
}

impl SearchMode {
    /// The mode's name as used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Vector => "vector",
            SearchMode::Lexical => "lexical",
            SearchMode::Hybrid => "hybrid",
        }
    }

    /// Parses `vector`, `lexical` or `hybrid`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "vector" => Ok(SearchMode::Vector),
            "lexical" => Ok(SearchMode::Lexical),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(Error::invalid(format!(
                "unknown search mode {:?} (vector, lexical or hybrid)",
                crate::error::clip(other)
            ))),
        }
    }

    /// Whether the mode needs a query vector.
    pub fn uses_vector(self) -> bool {
        self != SearchMode::Lexical
    }

    /// Whether the mode needs query text.
    pub fn uses_text(self) -> bool {
        self != SearchMode::Vector
    }
}

/// The default `k` of reciprocal rank fusion.
pub const DEFAULT_RRF_K: f64 = 60.0;

/// How a hybrid search fuses its arms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fusion {
    /// The `k` of `w / (k + rank)`: larger flattens the weight of the top ranks (default 60).
    pub rrf_k: f64,
    /// Weight of the vector arm (default 1).
    pub vector_weight: f64,
    /// Weight of the lexical arm (default 1).
    pub lexical_weight: f64,
    /// Candidates taken from the vector arm; default `max(k, 50)`.
    pub vector_depth: Option<usize>,
    /// Candidates taken from the lexical arm; default `max(k, 50)`.
    pub lexical_depth: Option<usize>,
}

impl Default for Fusion {
    fn default() -> Self {
        Self {
            rrf_k: DEFAULT_RRF_K,
            vector_weight: 1.0,
            lexical_weight: 1.0,
            vector_depth: None,
            lexical_depth: None,
        }
    }
}

impl Fusion {
    /// Checks the figures; `what` names the request in messages.
    pub fn validate(&self, what: &str) -> Result<()> {
        if !(self.rrf_k.is_finite() && (0.0..=1e6).contains(&self.rrf_k)) {
            return Err(Error::invalid(format!(
                "{what}: rrf_k must be 0 to 1000000, got {}",
                self.rrf_k
            )));
        }
        for (name, w) in [
            ("vector_weight", self.vector_weight),
            ("lexical_weight", self.lexical_weight),
        ] {
            if !(w.is_finite() && (0.0..=1e6).contains(&w)) {
                return Err(Error::invalid(format!(
                    "{what}: {name} must be 0 to 1000000, got {w}"
                )));
            }
        }
        for (name, d) in [
            ("vector_depth", self.vector_depth),
            ("lexical_depth", self.lexical_depth),
        ] {
            if let Some(d) = d {
                if d == 0 || d > super::MAX_K {
                    return Err(Error::invalid(format!(
                        "{what}: {name} must be 1 to {}, got {d}",
                        super::MAX_K
                    )));
                }
            }
        }
        Ok(())
    }

    /// Candidates the vector arm contributes to a search of `k` hits.
    pub fn vector_depth_for(&self, k: usize) -> usize {
        self.vector_depth.unwrap_or(k.max(50))
    }

    /// Candidates the lexical arm contributes to a search of `k` hits.
    pub fn lexical_depth_for(&self, k: usize) -> usize {
        self.lexical_depth.unwrap_or(k.max(50))
    }
}

/// A hit's fused score from its ranks in each arm (1-based; `None` where the arm missed it).
/// Computed in `f64` in this order (vector, then lexical), as the SQL of the pgvector backend
/// does, so equal inputs give bit-equal scores on every backend.
pub fn rrf_score(f: &Fusion, vector_rank: Option<u32>, lexical_rank: Option<u32>) -> f64 {
    let part = |w: f64, r: Option<u32>| r.map_or(0.0, |r| w / (f.rrf_k + f64::from(r)));
    part(f.vector_weight, vector_rank) + part(f.lexical_weight, lexical_rank)
}

/// Fuses the two arms' hits (each best first) into the best `k`, ordered by fused score then
/// id. Each hit keeps its ranks; its metadata and vector come from whichever arm carried them.
pub fn fuse(f: &Fusion, vector: Vec<Hit>, lexical: Vec<Hit>, k: usize) -> Vec<Hit> {
    let mut by_id: HashMap<String, (Hit, Option<u32>, Option<u32>)> = HashMap::new();
    for (i, h) in vector.into_iter().enumerate() {
        let rank = i as u32 + 1;
        by_id
            .entry(h.id.clone())
            .or_insert_with(|| (h, Some(rank), None));
    }
    for (i, h) in lexical.into_iter().enumerate() {
        let rank = i as u32 + 1;
        match by_id.get_mut(&h.id) {
            Some(e) => {
                e.2.get_or_insert(rank);
            }
            None => {
                by_id.insert(h.id.clone(), (h, None, Some(rank)));
            }
        }
    }
    let mut scored: Vec<(f64, Hit)> = by_id
        .into_values()
        .map(|(mut h, vr, lr)| {
            h.vector_rank = vr;
            h.lexical_rank = lr;
            (rrf_score(f, vr, lr), h)
        })
        .collect();
    scored.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.1.id.cmp(&b.1.id))
    });
    scored
        .into_iter()
        .take(k)
        .map(|(s, mut h)| {
            h.score = s as f32;
            h
        })
        .collect()
}

/// Marks each hit of a single-arm search with its rank in that arm.
pub fn rank_arm(hits: &mut [Hit], mode: SearchMode) {
    for (i, h) in hits.iter_mut().enumerate() {
        let r = Some(i as u32 + 1);
        match mode {
            SearchMode::Lexical => h.lexical_rank = r,
            _ => h.vector_rank = r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: &str) -> Hit {
        Hit {
            id: id.into(),
            score: 0.0,
            metadata: None,
            vector: None,
            vector_rank: None,
            lexical_rank: None,
        }
    }

    fn ids(hits: &[Hit]) -> Vec<&str> {
        hits.iter().map(|h| h.id.as_str()).collect()
    }

    #[test]
    fn a_hit_found_by_both_arms_wins() {
        let f = Fusion::default();
        let out = fuse(
            &f,
            vec![hit("a"), hit("b"), hit("c")],
            vec![hit("c"), hit("d")],
            10,
        );
        assert_eq!(ids(&out), ["c", "a", "b", "d"]);
        let c = &out[0];
        assert_eq!((c.vector_rank, c.lexical_rank), (Some(3), Some(1)));
        assert_eq!(c.score, (1.0 / 63.0 + 1.0 / 61.0) as f32);
        assert_eq!(out[1].score, (1.0f64 / 61.0) as f32);
    }

    #[test]
    fn equal_scores_go_in_id_order_and_k_cuts() {
        let f = Fusion::default();
        let out = fuse(&f, vec![hit("z")], vec![hit("m")], 10);
        assert_eq!(ids(&out), ["m", "z"]);
        let out = fuse(&f, vec![hit("z"), hit("y")], vec![hit("m"), hit("n")], 3);
        assert_eq!(ids(&out), ["m", "z", "n"]);
    }

    #[test]
    fn weights_and_k_change_the_order() {
        let f = Fusion {
            lexical_weight: 0.0,
            ..Fusion::default()
        };
        let out = fuse(&f, vec![hit("a"), hit("b")], vec![hit("b"), hit("c")], 10);
        assert_eq!(ids(&out), ["a", "b", "c"]);
        assert_eq!(out[2].score, 0.0);
        let f = Fusion {
            rrf_k: 0.0,
            lexical_weight: 2.0,
            ..Fusion::default()
        };
        let out = fuse(&f, vec![hit("a")], vec![hit("b")], 10);
        assert_eq!(ids(&out), ["b", "a"]);
    }

    #[test]
    fn bad_figures_are_refused() {
        let bad = [
            Fusion {
                rrf_k: f64::NAN,
                ..Fusion::default()
            },
            Fusion {
                vector_weight: -1.0,
                ..Fusion::default()
            },
            Fusion {
                lexical_depth: Some(0),
                ..Fusion::default()
            },
            Fusion {
                vector_depth: Some(super::super::MAX_K + 1),
                ..Fusion::default()
            },
        ];
        for f in bad {
            assert!(f.validate("search 0").is_err(), "{f:?}");
        }
        Fusion::default().validate("search 0").unwrap();
    }

    #[test]
    fn modes_parse() {
        for m in [SearchMode::Vector, SearchMode::Lexical, SearchMode::Hybrid] {
            assert_eq!(SearchMode::parse(m.as_str()).unwrap(), m);
        }
        assert!(SearchMode::parse("fuzzy").is_err());
    }
}
