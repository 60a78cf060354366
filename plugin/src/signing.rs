//! Request signing and response verification (shared/PROTOCOL.md, "Authentication"), and the
//! nonce generator.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::types::Header;

type HmacSha256 = Hmac<Sha256>;

/// Responses whose timestamp is further than this from our clock are refused.
pub const MAX_SKEW_SECS: u64 = 300;

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// The shared key and its id.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    id: String,
    /// HMAC keyed once (inner and outer pads absorbed); cloned for every signature.
    keyed: HmacSha256,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    /// Parses 64 hex characters (lower case as written by `rlclaw init`; upper case is accepted).
    pub fn from_hex(s: &str) -> Result<Key, String> {
        let s = s.trim();
        if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the key must be 64 hex characters".to_string());
        }
        let mut bytes = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(chunk).map_err(|_| "bad hex".to_string())?;
            bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| "bad hex".to_string())?;
        }
        let id = sha256_hex(&bytes)[..16].to_string();
        let keyed = HmacSha256::new_from_slice(&bytes).expect("HMAC takes any key length");
        Ok(Key { bytes, id, keyed })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self) -> HmacSha256 {
        self.keyed.clone()
    }

    /// The MAC over canonical lines joined by `\n`, fed in without building the joined string.
    fn mac_of(&self, lines: &[&str]) -> HmacSha256 {
        let mut mac = self.mac();
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                mac.update(b"\n");
            }
            mac.update(line.as_bytes());
        }
        mac
    }

    /// The four `X-Rlclaw-*` headers (and Content-Type when there is a body) for a request.
    pub fn sign_request(
        &self,
        timestamp: u64,
        nonce: &str,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Vec<Header> {
        let ts = timestamp.to_string();
        let method = method.to_ascii_uppercase();
        let body_hash = sha256_hex(body);
        let mac = self.mac_of(&["rlclaw-v1", &ts, nonce, &method, path, &body_hash]);
        let sig = hex(&mac.finalize().into_bytes());
        let mut headers = vec![
            ("x-rlclaw-key-id".to_string(), self.id.clone()),
            ("x-rlclaw-timestamp".to_string(), ts),
            ("x-rlclaw-nonce".to_string(), nonce.to_string()),
            ("x-rlclaw-signature".to_string(), format!("v1={sig}")),
        ];
        if !body.is_empty() {
            headers.push(("content-type".to_string(), "application/json".to_string()));
        }
        headers
    }

    /// The `X-Rlclaw-Signature` value the bridge puts on a response (for tests and stand-ins).
    pub fn sign_response(&self, timestamp: u64, nonce: &str, status: u16, body: &[u8]) -> String {
        let (ts, status) = (timestamp.to_string(), status.to_string());
        let mac = self.mac_of(&["rlclaw-v1-response", &ts, nonce, &status, &sha256_hex(body)]);
        format!("v1={}", hex(&mac.finalize().into_bytes()))
    }

    /// Checks a response's signature against the request's nonce and its timestamp against our
    /// clock. The error says what was wrong, for a log line.
    pub fn verify_response(
        &self,
        now_secs: u64,
        nonce: &str,
        status: u16,
        headers: &[Header],
        body: &[u8],
    ) -> Result<(), String> {
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let ts = get("x-rlclaw-timestamp").ok_or("the response has no X-Rlclaw-Timestamp")?;
        let sig = get("x-rlclaw-signature").ok_or("the response has no X-Rlclaw-Signature")?;
        if ts.is_empty() || ts.len() > 12 || !ts.bytes().all(|b| b.is_ascii_digit()) {
            return Err("the response timestamp is malformed".to_string());
        }
        let sig_hex = sig
            .strip_prefix("v1=")
            .filter(|h| h.len() == 64)
            .ok_or("the response signature is malformed")?;
        let sig_bytes = decode_hex(sig_hex).ok_or("the response signature is malformed")?;
        let status = status.to_string();
        let mac = self.mac_of(&["rlclaw-v1-response", ts, nonce, &status, &sha256_hex(body)]);
        mac.verify_slice(&sig_bytes)
            .map_err(|_| "the response signature does not verify".to_string())?;
        let t: u64 = ts
            .parse()
            .map_err(|_| "the response timestamp is malformed")?;
        if t.abs_diff(now_secs) > MAX_SKEW_SECS {
            return Err(format!(
                "the response timestamp is {}s away from our clock",
                t.abs_diff(now_secs)
            ));
        }
        Ok(())
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A SHA-256 based deterministic random bit generator, reseeded with the entropy that comes
/// with every event. Its output names nonces; it never leaves the component otherwise.
///
/// Entropy is XOR-folded into a 128-bit accumulator as it arrives (cheap, on every event) and
/// hashed with the state when the next output is drawn, so a nonce costs exactly one SHA-256
/// block (it was five). Nonces are public (they travel in a header), so the digest may seed the
/// next state although half of it is shown: the other half keeps the next output unpredictable.
#[derive(Clone, Debug, Default)]
pub struct Drbg {
    state: [u8; 32],
    acc: u128,
}

impl Drbg {
    pub fn reseed(&mut self, entropy: &[u8], now_ms: u64) {
        // Rotating before each fold keeps repeated entropy from cancelling itself out.
        self.acc = self.acc.rotate_left(29) ^ u128::from(now_ms);
        for chunk in entropy.chunks(16) {
            let mut word = [0u8; 16];
            word[..chunk.len()].copy_from_slice(chunk);
            self.acc = self.acc.rotate_left(29) ^ u128::from_le_bytes(word);
        }
    }

    fn next_block(&mut self) -> [u8; 32] {
        let mut h = Sha256::new();
        // 7 + 32 + 16 = 55 bytes: the most that SHA-256 pads into a single block.
        h.update(b"rlc-rng");
        h.update(self.state);
        h.update(self.acc.to_le_bytes());
        let out: [u8; 32] = h.finalize().into();
        self.state = out;
        self.acc = 0;
        out
    }

    /// A fresh nonce: 32 lowercase hex characters (128 bits).
    pub fn nonce(&mut self) -> String {
        hex(&self.next_block()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn key_id_is_sha256_prefix() {
        let k = Key::from_hex(KEY).unwrap();
        let raw: Vec<u8> = (0u8..32).collect();
        assert_eq!(k.id(), &sha256_hex(&raw)[..16]);
        assert!(Key::from_hex("abc").is_err());
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn request_signature_matches_an_independent_hmac() {
        let k = Key::from_hex(KEY).unwrap();
        let body = br#"{"a":1}"#;
        let h = k.sign_request(1795348055, "abcdefghijklmnop", "post", "/v1/ratings", body);
        let canonical = format!(
            "rlclaw-v1\n1795348055\nabcdefghijklmnop\nPOST\n/v1/ratings\n{}",
            sha256_hex(body)
        );
        let raw: Vec<u8> = (0u8..32).collect();
        let mut mac = HmacSha256::new_from_slice(&raw).unwrap();
        mac.update(canonical.as_bytes());
        let want = format!("v1={}", hex(&mac.finalize().into_bytes()));
        let sig = h.iter().find(|(n, _)| n == "x-rlclaw-signature").unwrap();
        assert_eq!(sig.1, want);
        assert!(
            h.iter()
                .any(|(n, v)| n == "content-type" && v == "application/json")
        );
        let get = k.sign_request(1, "abcdefghijklmnop", "GET", "/v1/status", b"");
        assert!(!get.iter().any(|(n, _)| n == "content-type"));
    }

    fn signed_response(k: &Key, ts: u64, nonce: &str, status: u16, body: &[u8]) -> Vec<Header> {
        let canonical = format!(
            "rlclaw-v1-response\n{ts}\n{nonce}\n{status}\n{}",
            sha256_hex(body)
        );
        let mut mac = k.mac();
        mac.update(canonical.as_bytes());
        vec![
            ("X-Rlclaw-Timestamp".into(), ts.to_string()),
            (
                "x-rlclaw-signature".into(),
                format!("v1={}", hex(&mac.finalize().into_bytes())),
            ),
        ]
    }

    #[test]
    fn responses_are_verified() {
        let k = Key::from_hex(KEY).unwrap();
        let h = signed_response(&k, 1000, "n1n1n1n1n1n1n1n1", 200, b"{}");
        assert!(
            k.verify_response(1000, "n1n1n1n1n1n1n1n1", 200, &h, b"{}")
                .is_ok()
        );
        // wrong nonce, status, body, clock, missing headers
        assert!(
            k.verify_response(1000, "n2n2n2n2n2n2n2n2", 200, &h, b"{}")
                .is_err()
        );
        assert!(
            k.verify_response(1000, "n1n1n1n1n1n1n1n1", 201, &h, b"{}")
                .is_err()
        );
        assert!(
            k.verify_response(1000, "n1n1n1n1n1n1n1n1", 200, &h, b"{ }")
                .is_err()
        );
        assert!(
            k.verify_response(1400, "n1n1n1n1n1n1n1n1", 200, &h, b"{}")
                .is_err()
        );
        assert!(
            k.verify_response(1000, "n1n1n1n1n1n1n1n1", 200, &h[..1], b"{}")
                .is_err()
        );
        let other = Key::from_hex(&"ab".repeat(32)).unwrap();
        assert!(
            other
                .verify_response(1000, "n1n1n1n1n1n1n1n1", 200, &h, b"{}")
                .is_err()
        );
    }

    #[test]
    fn nonces_are_fresh_and_well_formed() {
        let mut d = Drbg::default();
        d.reseed(&[7; 16], 1);
        let a = d.nonce();
        let b = d.nonce();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        let mut e = Drbg::default();
        e.reseed(&[8; 16], 1);
        assert_ne!(e.nonce(), a);
        // Entropy that repeats from event to event still changes the output.
        let (mut f, mut g) = (Drbg::default(), Drbg::default());
        f.reseed(&[9; 16], 5);
        f.reseed(&[9; 16], 5);
        g.reseed(&[9; 16], 5);
        assert_ne!(f.nonce(), g.nonce());
    }
}
