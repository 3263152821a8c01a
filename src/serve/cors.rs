//! CORS as llama-server has it: on by default for any origin (the request's
//! `Origin` is echoed back in `Access-Control-Allow-Origin`), an `OPTIONS`
//! preflight on any path answered with the allowed methods and headers, and
//! `--cors-origin` to allow only some origins (others get no CORS headers,
//! so browsers block them, and their preflights a 403).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Which browser origins may call the server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cors {
    /// Any origin (llama-server's behaviour, the default).
    #[default]
    Any,
    /// Only these origins (exact `scheme://host[:port]` matches).
    Origins(Vec<String>),
}

impl Cors {
    /// From `--cors-origin` values: none or `*` is any origin.
    pub fn from_origins(origins: &[String]) -> Result<Cors, String> {
        if origins.is_empty() || origins.iter().any(|o| o == "*") {
            return Ok(Cors::Any);
        }
        for o in origins {
            let bad = o.is_empty()
                || o.ends_with('/')
                || o.chars().any(|c| c.is_whitespace() || c.is_control())
                || !(o == "null" || o.contains("://"));
            if bad {
                return Err(format!(
                    "`{o}` is not an origin (scheme://host[:port], no path or trailing slash)"
                ));
            }
        }
        Ok(Cors::Origins(origins.to_vec()))
    }

    fn allows(&self, origin: &str) -> bool {
        match self {
            Cors::Any => true,
            Cors::Origins(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// The middleware: preflights answered here, CORS headers on every answer
/// to an allowed origin.
pub async fn layer(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_string);
    let allowed = origin
        .as_deref()
        .filter(|o| cors.allows(o))
        .map(str::to_string);
    if req.method() == Method::OPTIONS {
        if origin.is_some() && allowed.is_none() {
            return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
        }
        let mut res = StatusCode::NO_CONTENT.into_response();
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("*"));
        let h = res.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
        allow(h, allowed.as_deref());
        return res;
    }
    let mut res = next.run(req).await;
    allow(res.headers_mut(), allowed.as_deref());
    res
}

fn allow(h: &mut HeaderMap, origin: Option<&str>) {
    let Some(value) = origin.and_then(|o| HeaderValue::from_str(o).ok()) else {
        return;
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert_eq!(Cors::from_origins(&[]), Ok(Cors::Any));
        assert_eq!(Cors::from_origins(&["*".into()]), Ok(Cors::Any));
        let c = Cors::from_origins(&["http://localhost:3000".into()]).unwrap();
        assert!(c.allows("http://localhost:3000"));
        assert!(!c.allows("http://localhost:3001"));
        for bad in ["", "localhost", "http://a/", "http://a b"] {
            assert!(Cors::from_origins(&[bad.into()]).is_err(), "{bad}");
        }
    }
}
