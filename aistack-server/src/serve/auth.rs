//! API-key authentication: keys come from a secret file, arrive as `Authorization: Bearer`, and
//! are compared as SHA-256 digests in constant time, so neither content nor length leaks.

use std::path::Path;
use std::sync::Arc;

use aistack_core::{Error, Result};
use axum::body::Body;
use axum::http::{header, Request, Response};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tower_http::validate_request::ValidateRequest;

use super::error::ApiError;

/// The accepted keys, kept only as digests.
#[derive(Clone)]
pub struct ApiKeys {
    digests: Arc<Vec<[u8; 32]>>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

impl ApiKeys {
    /// Reads keys from `path`, one per line (blank lines and `#` comments skipped). Refuses a
    /// file that group or others can read, an empty file, and keys shorter than 16 characters.
    pub fn load(path: &Path) -> Result<Self> {
        let text = aistack_core::config::read_secret_file(path, "server.api_key_file")?;
        Self::parse(&text)
    }

    /// Parses the key file's text.
    pub fn parse(text: &str) -> Result<Self> {
        let key = "server.api_key_file";
        let mut digests = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let k = line.trim();
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            if k.len() < 16 {
                return Err(Error::config(
                    key,
                    format!("the key on line {} is shorter than 16 characters", n + 1),
                ));
            }
            if !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(Error::config(
                    key,
                    format!(
                        "the key on line {} has characters a header cannot carry",
                        n + 1
                    ),
                ));
            }
            digests.push(digest(k.as_bytes()));
        }
        if digests.is_empty() {
            return Err(Error::config(key, "the file holds no key"));
        }
        Ok(Self {
            digests: Arc::new(digests),
        })
    }

    /// Whether `presented` is one of the keys; every stored digest is compared, in constant time.
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let d = digest(presented);
        let mut ok = subtle::Choice::from(0u8);
        for k in self.digests.iter() {
            ok |= k.ct_eq(&d);
        }
        ok.into()
    }
}

/// The bearer token of a request, if the header is well-formed.
fn bearer(req: &Request<Body>) -> Option<&[u8]> {
    let v = req.headers().get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The validator the auth layer runs: public paths pass, others need a valid key.
#[derive(Clone, Debug)]
pub struct RequireKey {
    keys: Option<ApiKeys>,
    public: Arc<Vec<&'static str>>,
}

impl RequireKey {
    /// Requires one of `keys` on every path except `public` ones; no keys means no auth.
    pub fn new(keys: Option<ApiKeys>, public: Vec<&'static str>) -> Self {
        Self {
            keys,
            public: Arc::new(public),
        }
    }
}

impl ValidateRequest<Body> for RequireKey {
    type ResponseBody = Body;

    fn validate(&mut self, req: &mut Request<Body>) -> std::result::Result<(), Response<Body>> {
        let Some(keys) = &self.keys else {
            return Ok(());
        };
        if self.public.iter().any(|p| req.uri().path() == *p) {
            return Ok(());
        }
        match bearer(req) {
            Some(k) if keys.accepts(k) => Ok(()),
            _ => Err(ApiError::unauthorized().into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_match_exactly() {
        let keys =
            ApiKeys::parse("# comment\n\nkey-number-one-0001\n  key-number-two-0002  \n").unwrap();
        assert!(keys.accepts(b"key-number-one-0001"));
        assert!(keys.accepts(b"key-number-two-0002"));
        assert!(!keys.accepts(b"key-number-one-000"));
        assert!(!keys.accepts(b"key-number-one-00011"));
        assert!(!keys.accepts(b""));
        assert!(ApiKeys::parse("short\n").is_err());
        assert!(ApiKeys::parse("# only a comment\n").is_err());
        assert!(ApiKeys::parse("key with spaces in it\n").is_err());
    }

    #[test]
    fn bearer_header_forms() {
        let req = |v: &str| {
            Request::builder()
                .header(header::AUTHORIZATION, v)
                .body(Body::empty())
                .unwrap()
        };
        assert_eq!(bearer(&req("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("bearer   abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&req("Basic abc")), None);
        assert_eq!(bearer(&req("Bearer")), None);
        assert_eq!(bearer(&req("Bearer ")), None);
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys");
        std::fs::write(&p, "a-long-enough-key-123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ApiKeys::load(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ApiKeys::load(&p).unwrap().accepts(b"a-long-enough-key-123"));
    }
}
