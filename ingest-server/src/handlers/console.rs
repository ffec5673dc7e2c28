//! The operator console: `GET /console`, one page embedded in the binary that reads the public
//! API (and, given an admin key, the admin one) from the browser; `GET /` redirects to it.
//!
//! The page is served with a Content-Security-Policy that lets through its one inline script
//! and its one inline style, by their SHA-256, and requests to this server only: an injected
//! script or a request elsewhere is refused by the browser.

use std::sync::LazyLock;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::StatusCode;
use sha2::{Digest, Sha256};

use crate::response::Response;

/// The page: markup, style and script in one file, so the page makes no other request than the
/// API calls its script makes to this server.
const PAGE: &str = include_str!("../console/console.html");

/// The page's Content-Security-Policy, computed once from the page itself.
static POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = policy(PAGE);
    // The policy holds only ASCII: fixed directives and base64 digests.
    HeaderValue::from_str(&policy).expect("a policy is a valid header value")
});

/// `GET /console`: the page.
pub(crate) fn page() -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /`: 307 to the console.
pub(crate) fn root() -> Response {
    let mut response = hyper::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    response
        .headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/console"));
    response
}

/// The policy for `page`: its inline `<script>` and `<style>` allowed by hash, the API of
/// this origin for `fetch` and the event stream, nothing else.
fn policy(page: &str) -> String {
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        source_hash(element_text(page, "script")),
        source_hash(element_text(page, "style")),
    )
}

/// The text between `<tag>` and `</tag>`, the first such element: what a browser hashes.
fn element_text<'a>(page: &'a str, tag: &str) -> &'a str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    // The page is a constant holding one of each; a unit test checks it.
    let start = page.find(&open).expect("the page has the element") + open.len();
    let end = start + page[start..].find(&close).expect("the element is closed");
    &page[start..end]
}

/// A CSP source expression matching exactly this inline text.
fn source_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        BASE64.encode(Sha256::digest(text.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One inline script and one inline style, which the policy names; no markup from data
    /// (`innerHTML`), no inline handlers, and no address of another origin.
    #[test]
    fn the_page_is_self_contained_and_its_policy_names_its_script_and_style() {
        for tag in ["script", "style"] {
            assert_eq!(PAGE.matches(&format!("<{tag}")).count(), 1, "one <{tag}>");
            let hash = source_hash(element_text(PAGE, tag));
            let policy = POLICY.to_str().expect("ASCII");
            assert!(policy.contains(&hash), "{tag} hash");
        }
        assert!(!PAGE.contains("innerHTML") && !PAGE.contains("outerHTML"));
        assert!(!PAGE.contains(" onclick=") && !PAGE.contains(" style="));
        let external = PAGE.replace("http://www.w3.org/2000/svg", "");
        assert!(!external.contains("http:") && !external.contains("https:"));
        assert!(!external.contains("//cdn") && !external.contains("src=\"//"));
        assert!(
            PAGE.len() < 40 * 1024,
            "the page stays small: {}",
            PAGE.len()
        );
    }

    #[test]
    fn element_text_is_what_lies_between_the_tags() {
        assert_eq!(element_text("<p><style>a{}</style>", "style"), "a{}");
        // The digest of nothing, as `printf '' | openssl sha256 -binary | base64` gives it.
        assert_eq!(
            source_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }
}
