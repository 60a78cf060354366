//! Request signing as PROTOCOL.md defines it.

use crate::keys::sha256_hex;

pub const HEADER_KEY_ID: &str = "x-rlclaw-key-id";
pub const HEADER_TIMESTAMP: &str = "x-rlclaw-timestamp";
pub const HEADER_NONCE: &str = "x-rlclaw-nonce";
pub const HEADER_SIGNATURE: &str = "x-rlclaw-signature";

/// A request more than this far from the bridge's clock, either way, is refused.
pub const MAX_CLOCK_SKEW_S: i64 = 300;
/// Accepted nonces are kept at least this long.
pub const NONCE_KEEP_S: i64 = 600;

/// The four auth headers of a request, each checked for form.
#[derive(Debug, Clone)]
pub struct AuthHeaders {
    pub key_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub signature: String,
}

impl AuthHeaders {
    /// Reads the four headers; `None` when one is missing or malformed.
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Option<AuthHeaders> {
        let key_id = get(HEADER_KEY_ID)?;
        let timestamp = get(HEADER_TIMESTAMP)?;
        let nonce = get(HEADER_NONCE)?;
        let signature = get(HEADER_SIGNATURE)?;
        let key_id_ok = key_id.len() == 16 && key_id.bytes().all(is_lower_hex);
        let timestamp_ok =
            (1..=12).contains(&timestamp.len()) && timestamp.bytes().all(|b| b.is_ascii_digit());
        let signature_ok = signature
            .strip_prefix("v1=")
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(is_lower_hex));
        (key_id_ok && timestamp_ok && valid_nonce(&nonce) && signature_ok).then_some(AuthHeaders {
            key_id,
            timestamp,
            nonce,
            signature,
        })
    }

    /// The timestamp as seconds (always parses: checked in `parse`).
    pub fn timestamp_s(&self) -> i64 {
        self.timestamp.parse().unwrap_or(0)
    }
}

/// 16 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    (16..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

/// The string a request signature covers.
pub fn request_canonical(
    timestamp: &str,
    nonce: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> String {
    format!(
        "rlclaw-v1\n{timestamp}\n{nonce}\n{}\n{path_and_query}\n{}",
        method.to_ascii_uppercase(),
        sha256_hex(body)
    )
}

/// The string a response signature covers.
pub fn response_canonical(
    timestamp: &str,
    request_nonce: &str,
    status: u16,
    body: &[u8],
) -> String {
    format!(
        "rlclaw-v1-response\n{timestamp}\n{request_nonce}\n{status}\n{}",
        sha256_hex(body)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Option<AuthHeaders> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        AuthHeaders::parse(|name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn well_formed_headers_parse_and_malformed_ones_do_not() {
        let sig = format!("v1={}", "a".repeat(64));
        let good = [
            (HEADER_KEY_ID, "0123456789abcdef"),
            (HEADER_TIMESTAMP, "1795348055"),
            (HEADER_NONCE, "abcdefghijklmnop"),
            (HEADER_SIGNATURE, sig.as_str()),
        ];
        assert!(headers(&good).is_some());
        for (i, bad) in ["0123456789ABCDEF", "1795348055000000", "short", "v1=zz"]
            .iter()
            .enumerate()
        {
            let mut h = good;
            h[i].1 = bad;
            assert!(headers(&h).is_none(), "{bad} should be malformed");
        }
        assert!(headers(&good[..3]).is_none());
    }

    #[test]
    fn canonical_strings_follow_the_protocol() {
        assert_eq!(
            request_canonical("1", "n", "post", "/v1/ratings", b""),
            "rlclaw-v1\n1\nn\nPOST\n/v1/ratings\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(
            response_canonical("1", "n", 200, b"{}").starts_with("rlclaw-v1-response\n1\nn\n200\n")
        );
    }
}
