//! Tool schemas from the HTTP API's own types: a type's utoipa schema with every `$ref` inlined,
//! `allOf` (what `#[serde(flatten)]` gives) merged into one object, and OpenAPI-only keywords
//! dropped, is the self-contained JSON Schema an MCP client validates arguments against.

use std::collections::HashMap;

use serde_json::{Map, Value};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

const REF_PREFIX: &str = "#/components/schemas/";
/// Deeper than any request type nests; a guard against a recursive type.
const MAX_DEPTH: usize = 32;

/// The JSON Schema of `T`, self-contained (no `$ref`).
pub fn schema_of<T: ToSchema>() -> Map<String, Value> {
    let mut named: Vec<(String, RefOr<Schema>)> = Vec::new();
    T::schemas(&mut named);
    let defs: HashMap<String, Value> = named
        .into_iter()
        .filter_map(|(name, s)| serde_json::to_value(s).ok().map(|v| (name, v)))
        .collect();
    let root = serde_json::to_value(T::schema()).unwrap_or(Value::Null);
    match resolve(root, &defs, 0) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The schema of a tool's arguments: `T`'s, closed to properties it does not name (the tool
/// refuses unknown arguments as the HTTP API refuses unknown fields).
pub fn arguments_of<T: ToSchema>() -> Map<String, Value> {
    let mut s = schema_of::<T>();
    s.insert("type".into(), Value::from("object"));
    s.entry("properties")
        .or_insert_with(|| Value::Object(Map::new()));
    s.insert("additionalProperties".into(), Value::Bool(false));
    s
}

/// The property names a schema object declares.
pub fn property_names(schema: &Map<String, Value>) -> Vec<&str> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn resolve(v: Value, defs: &HashMap<String, Value>, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Object(Map::new());
    }
    match v {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|i| resolve(i, defs, depth + 1))
                .collect(),
        ),
        Value::Object(mut m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let target = r
                    .strip_prefix(REF_PREFIX)
                    .and_then(|name| defs.get(name))
                    .cloned()
                    .unwrap_or(Value::Object(Map::new()));
                m.remove("$ref");
                // Keywords beside a `$ref` (a field's own description) win over the target's.
                let mut merged = match resolve(target, defs, depth + 1) {
                    Value::Object(t) => t,
                    _ => Map::new(),
                };
                for (k, v) in m {
                    merged.insert(k, resolve(v, defs, depth + 1));
                }
                return Value::Object(merged);
            }
            let mut out = Map::new();
            for (k, v) in m {
                if matches!(
                    k.as_str(),
                    "example" | "xml" | "externalDocs" | "discriminator"
                ) {
                    continue;
                }
                // OpenAPI's number formats (`int32`, `float`, ...) are not JSON Schema's, and
                // strict validators (Ajv) refuse unknown formats.
                if k == "format" && !is_json_schema_format(&v) {
                    continue;
                }
                out.insert(k, resolve(v, defs, depth + 1));
            }
            merge_all_of(&mut out);
            Value::Object(out)
        }
        other => other,
    }
}

fn is_json_schema_format(v: &Value) -> bool {
    matches!(
        v.as_str(),
        Some(
            "date-time"
                | "date"
                | "time"
                | "duration"
                | "email"
                | "hostname"
                | "ipv4"
                | "ipv6"
                | "uri"
                | "uri-reference"
                | "uuid"
                | "regex"
        )
    )
}

/// Folds `allOf: [object, object, ...]` into the schema itself: one `properties` and one
/// `required` list, as clients that read a tool's arguments expect.
fn merge_all_of(m: &mut Map<String, Value>) {
    let Some(Value::Array(parts)) = m.get("allOf") else {
        return;
    };
    let mergeable = parts.iter().all(|p| {
        p.as_object().is_some_and(|o| {
            o.get("type").is_none_or(|t| t == "object") && !o.contains_key("allOf")
        })
    });
    if !mergeable {
        return;
    }
    let Some(Value::Array(parts)) = m.remove("allOf") else {
        return;
    };
    let mut properties = Map::new();
    let mut required: Vec<Value> = Vec::new();
    for part in parts {
        let Value::Object(o) = part else { continue };
        for (k, v) in o {
            match k.as_str() {
                "properties" => {
                    if let Value::Object(p) = v {
                        properties.extend(p);
                    }
                }
                "required" => {
                    if let Value::Array(r) = v {
                        for name in r {
                            if !required.contains(&name) {
                                required.push(name);
                            }
                        }
                    }
                }
                "type" => {}
                _ => {
                    m.entry(k).or_insert(v);
                }
            }
        }
    }
    m.insert("type".into(), Value::from("object"));
    m.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        m.insert("required".into(), Value::Array(required));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, ToSchema)]
    #[allow(dead_code)]
    struct Inner {
        /// A count.
        n: u32,
        /// A nested part.
        part: Part,
    }

    #[derive(Deserialize, ToSchema)]
    #[allow(dead_code)]
    struct Part {
        label: Option<String>,
    }

    #[derive(Deserialize, ToSchema)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(flatten)]
        inner: Inner,
    }

    #[test]
    fn refs_are_inlined_and_flattened_fields_merged() {
        let s = arguments_of::<Outer>();
        let text = serde_json::to_string(&s).unwrap();
        assert!(!text.contains("$ref"), "{text}");
        assert!(!text.contains("allOf"), "{text}");
        assert!(!text.contains("int32"), "{text}");
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], false);
        let mut names = property_names(&s);
        names.sort_unstable();
        assert_eq!(names, ["n", "name", "part"]);
        let required: Vec<&str> = s["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            required.contains(&"name") && required.contains(&"n"),
            "{text}"
        );
        assert_eq!(s["properties"]["n"]["description"], "A count.");
        assert!(
            s["properties"]["part"]["properties"]["label"].is_object(),
            "{text}"
        );
    }
}
