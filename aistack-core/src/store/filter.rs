//! One filter language over record metadata, with a JSON form in the style of MongoDB and Chroma:
//!
//! ```json
//! {"$and": [{"lang": "en"}, {"year": {"$gte": 2022}}, {"tags": {"$in": ["rust", "db"]}}]}
//! ```
//!
//! Operators: `$eq $ne $in $nin $gt $gte $lt $lte $exists` on fields, `$and $or $not` over
//! filters. `{"field": value}` is `$eq`; an object with several fields is their `$and`. Every
//! backend gives the same results: this module is the reference semantics, and the SQL and
//! Qdrant compilers follow it.
//!
//! Semantics: a field holding an array matches `$eq`/`$in` when any element does; `$ne`/`$nin`
//! are their negation, so they also match records without the field; comparisons need numbers on
//! both sides (a non-numeric or missing field never matches); integers and floats compare by
//! value (`2024 == 2024.0`).

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// A scalar a field is compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number (integers are held exactly up to 2⁵³).
    Num(f64),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    fn from_json(v: &Value, ctx: &str) -> Result<Self> {
        match v {
            Value::String(s) => Ok(Scalar::Str(s.clone())),
            Value::Bool(b) => Ok(Scalar::Bool(*b)),
            Value::Number(n) => n
                .as_f64()
                .filter(|f| f.is_finite())
                .map(Scalar::Num)
                .ok_or_else(|| Error::invalid(format!("{ctx}: number out of range"))),
            other => Err(Error::invalid(format!(
                "{ctx}: expected a string, number or boolean, got {}",
                type_name(other)
            ))),
        }
    }

    /// The scalar as JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Scalar::Str(s) => Value::String(s.clone()),
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Num(n) => {
                if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
                    Value::from(*n as i64)
                } else {
                    serde_json::Number::from_f64(*n)
                        .map(Value::Number)
                        .unwrap_or(Value::Null)
                }
            }
        }
    }

    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (Scalar::Str(a), Value::String(b)) => a == b,
            (Scalar::Bool(a), Value::Bool(b)) => a == b,
            (Scalar::Num(a), Value::Number(b)) => b.as_f64() == Some(*a),
            _ => false,
        }
    }
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Gte,
    /// `<`
    Lt,
    /// `<=`
    Lte,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Field equals the value (any element, for arrays).
    Eq(String, Scalar),
    /// Not `Eq`: the field differs or is missing.
    Ne(String, Scalar),
    /// Field equals one of the values.
    In(String, Vec<Scalar>),
    /// Not `In`.
    Nin(String, Vec<Scalar>),
    /// Numeric comparison of the field with the value.
    Cmp(String, Cmp, f64),
    /// The field is present (and not null) when `true`; absent when `false`.
    Exists(String, bool),
    /// All of the filters (true when empty).
    And(Vec<Filter>),
    /// Any of the filters (false when empty).
    Or(Vec<Filter>),
    /// The negation.
    Not(Box<Filter>),
}

/// Field names: letters, digits, `_`, `-` and `.` (a dot addresses a nested object).
fn check_field(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('$')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "filter field name {name:?} is invalid (letters, digits, _ - and . only)"
        )))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const MAX_DEPTH: usize = 32;

impl Filter {
    /// Parses the JSON form; an unknown operator, a wrong value type or a bad field name is
    /// `InvalidInput` naming the problem.
    pub fn from_json(v: &Value) -> Result<Filter> {
        parse(v, 0)
    }

    /// Whether `metadata` passes the filter.
    pub fn matches(&self, metadata: &Map<String, Value>) -> bool {
        match self {
            Filter::Eq(f, s) => field_any(metadata, f, |v| s.matches(v)),
            Filter::Ne(f, s) => !field_any(metadata, f, |v| s.matches(v)),
            Filter::In(f, list) => field_any(metadata, f, |v| list.iter().any(|s| s.matches(v))),
            Filter::Nin(f, list) => !field_any(metadata, f, |v| list.iter().any(|s| s.matches(v))),
            Filter::Cmp(f, op, x) => field_any(metadata, f, |v| {
                v.as_f64()
                    .and_then(|y| y.partial_cmp(x))
                    .is_some_and(|o| match op {
                        Cmp::Gt => o == Ordering::Greater,
                        Cmp::Gte => o != Ordering::Less,
                        Cmp::Lt => o == Ordering::Less,
                        Cmp::Lte => o != Ordering::Greater,
                    })
            }),
            Filter::Exists(f, want) => {
                let present = lookup(metadata, f).is_some_and(|v| !v.is_null());
                present == *want
            }
            Filter::And(fs) => fs.iter().all(|f| f.matches(metadata)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(metadata)),
            Filter::Not(f) => !f.matches(metadata),
        }
    }
}

/// The value at a dotted path.
pub fn lookup<'a>(metadata: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = metadata.get(parts.next()?)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// Whether the field, or any element of it when it is an array, satisfies `pred`.
fn field_any(metadata: &Map<String, Value>, field: &str, pred: impl Fn(&Value) -> bool) -> bool {
    match lookup(metadata, field) {
        None => false,
        Some(Value::Array(items)) => items.iter().any(&pred),
        Some(v) => pred(v),
    }
}

fn parse(v: &Value, depth: usize) -> Result<Filter> {
    if depth > MAX_DEPTH {
        return Err(Error::invalid(format!(
            "filter is nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let Value::Object(map) = v else {
        return Err(Error::invalid(format!(
            "a filter must be a JSON object, got {}",
            type_name(v)
        )));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (key, val) in map {
        let f = match key.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = val else {
                    return Err(Error::invalid(format!("{key:?} takes an array of filters")));
                };
                let subs = items
                    .iter()
                    .map(|i| parse(i, depth + 1))
                    .collect::<Result<Vec<_>>>()?;
                if key == "$and" {
                    Filter::And(subs)
                } else {
                    Filter::Or(subs)
                }
            }
            "$not" => Filter::Not(Box::new(parse(val, depth + 1)?)),
            k if k.starts_with('$') => {
                return Err(Error::invalid(format!(
                    "unknown filter operator {k:?} (known: $and $or $not, and on fields $eq $ne $in $nin $gt $gte $lt $lte $exists)"
                )))
            }
            field => {
                check_field(field)?;
                parse_field(field, val)?
            }
        };
        parts.push(f);
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Filter::And(parts)
    })
}

fn parse_field(field: &str, val: &Value) -> Result<Filter> {
    let Value::Object(ops) = val else {
        return Ok(Filter::Eq(
            field.to_string(),
            Scalar::from_json(val, &format!("filter on {field:?}"))?,
        ));
    };
    if ops.is_empty() {
        return Err(Error::invalid(format!(
            "filter on {field:?}: empty operator object"
        )));
    }
    let mut parts = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let ctx = format!("filter {op:?} on {field:?}");
        let f = field.to_string();
        parts.push(match op.as_str() {
            "$eq" => Filter::Eq(f, Scalar::from_json(arg, &ctx)?),
            "$ne" => Filter::Ne(f, Scalar::from_json(arg, &ctx)?),
            "$in" | "$nin" => {
                let Value::Array(items) = arg else {
                    return Err(Error::invalid(format!("{ctx}: takes an array")));
                };
                let list = items
                    .iter()
                    .map(|i| Scalar::from_json(i, &ctx))
                    .collect::<Result<Vec<_>>>()?;
                if op == "$in" {
                    Filter::In(f, list)
                } else {
                    Filter::Nin(f, list)
                }
            }
            "$gt" | "$gte" | "$lt" | "$lte" => {
                let x = arg
                    .as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| Error::invalid(format!("{ctx}: takes a number")))?;
                let cmp = match op.as_str() {
                    "$gt" => Cmp::Gt,
                    "$gte" => Cmp::Gte,
                    "$lt" => Cmp::Lt,
                    _ => Cmp::Lte,
                };
                Filter::Cmp(f, cmp, x)
            }
            "$exists" => match arg {
                Value::Bool(b) => Filter::Exists(f, *b),
                _ => return Err(Error::invalid(format!("{ctx}: takes true or false"))),
            },
            other => {
                return Err(Error::invalid(format!(
                    "unknown filter operator {other:?} on {field:?} (known: $eq $ne $in $nin $gt $gte $lt $lte $exists)"
                )))
            }
        });
    }
    Ok(if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Filter::And(parts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn f(v: Value) -> Filter {
        Filter::from_json(&v).unwrap()
    }

    #[test]
    fn operators() {
        let doc = m(
            json!({"lang": "en", "year": 2024, "score": 0.5, "tags": ["a", "b"], "ok": true, "n": null, "meta": {"src": "web"}}),
        );
        let yes = [
            json!({"lang": "en"}),
            json!({"lang": {"$eq": "en"}}),
            json!({"lang": {"$ne": "fr"}}),
            json!({"missing": {"$ne": "x"}}),
            json!({"year": {"$in": [2023, 2024]}}),
            json!({"year": {"$nin": [2020]}}),
            json!({"year": 2024.0}),
            json!({"year": {"$gt": 2023, "$lte": 2024}}),
            json!({"score": {"$lt": 1}}),
            json!({"tags": "b"}),
            json!({"tags": {"$in": ["z", "a"]}}),
            json!({"ok": true}),
            json!({"lang": {"$exists": true}}),
            json!({"n": {"$exists": false}}),
            json!({"missing": {"$exists": false}}),
            json!({"meta.src": "web"}),
            json!({"$or": [{"lang": "fr"}, {"year": 2024}]}),
            json!({"$not": {"lang": "fr"}}),
            json!({"$and": []}),
            json!({"lang": "en", "year": 2024}),
        ];
        for q in yes {
            assert!(f(q.clone()).matches(&doc), "{q} should match");
        }
        let no = [
            json!({"lang": "fr"}),
            json!({"lang": {"$ne": "en"}}),
            json!({"missing": "x"}),
            json!({"year": {"$gt": 2024}}),
            json!({"lang": {"$gt": 1}}),
            json!({"missing": {"$lt": 5}}),
            json!({"year": "2024"}),
            json!({"tags": {"$nin": ["a"]}}),
            json!({"$or": []}),
            json!({"$not": {"lang": "en"}}),
            json!({"lang": "en", "year": 2023}),
        ];
        for q in no {
            assert!(!f(q.clone()).matches(&doc), "{q} should not match");
        }
    }

    #[test]
    fn invalid_filters_are_refused() {
        for (q, want) in [
            (
                json!({"lang": {"$regex": "e.*"}}),
                "unknown filter operator \"$regex\"",
            ),
            (json!({"$nor": []}), "unknown filter operator \"$nor\""),
            (json!({"year": {"$gt": "2020"}}), "takes a number"),
            (json!({"year": {"$in": 5}}), "takes an array"),
            (
                json!({"lang": ["en"]}),
                "expected a string, number or boolean",
            ),
            (json!({"lang": {"$exists": 1}}), "takes true or false"),
            (json!({"bad name!": 1}), "field name"),
            (json!([1]), "must be a JSON object"),
            (json!({"lang": {}}), "empty operator object"),
        ] {
            let err = Filter::from_json(&q).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
            assert!(
                err.to_string().contains(want),
                "{err} should contain {want}"
            );
        }
        let mut deep = json!({"a": 1});
        for _ in 0..40 {
            deep = json!({ "$not": deep });
        }
        assert!(Filter::from_json(&deep).is_err());
    }
}
