//! The shared HMAC key: parsing, key ids, signing and constant-time verification (ring).

use ring::{digest, hmac, rand::SecureRandom};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum KeyError {
    #[error("a key must be 64 lowercase hex characters (32 bytes); found {0} characters")]
    BadLength(usize),
    #[error("a key must be lowercase hex (0-9, a-f)")]
    NotHex,
    #[error("the system random generator failed")]
    Random,
}

/// A 32-byte shared key with its key id.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    id: String,
    hmac: hmac::Key,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

impl Key {
    pub fn from_bytes(bytes: [u8; 32]) -> Key {
        let id = hex::encode(&digest::digest(&digest::SHA256, &bytes).as_ref()[..8]);
        let hmac = hmac::Key::new(hmac::HMAC_SHA256, &bytes);
        Key { bytes, id, hmac }
    }

    /// Parses 64 lowercase hex characters, with an optional trailing newline.
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let text = text.strip_suffix('\n').unwrap_or(text);
        if text.len() != 64 {
            return Err(KeyError::BadLength(text.len()));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(KeyError::NotHex);
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::NotHex)?;
        Ok(Key::from_bytes(bytes))
    }

    pub fn generate() -> Result<Key, KeyError> {
        let mut bytes = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Key::from_bytes(bytes))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The first 16 hex characters of SHA-256 of the raw key bytes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// `v1=` followed by lowercase hex of HMAC-SHA256(key, message).
    pub fn sign(&self, message: &[u8]) -> String {
        format!(
            "v1={}",
            hex::encode(hmac::sign(&self.hmac, message).as_ref())
        )
    }

    /// Constant-time check of a `v1=<hex>` signature.
    pub fn verify(&self, message: &[u8], signature: &str) -> bool {
        let Some(hex_sig) = signature.strip_prefix("v1=") else {
            return false;
        };
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(hex_sig, &mut tag).is_err() {
            return false;
        }
        hmac::verify(&self.hmac, message, &tag).is_ok()
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data).as_ref())
}

/// Fresh random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KeyError::Random)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_is_first_16_hex_of_sha256_of_raw_bytes() {
        let key = Key::from_bytes([0u8; 32]);
        // sha256 of 32 zero bytes = 66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925
        assert_eq!(key.id(), "66687aadf862bd77");
    }

    #[test]
    fn sign_then_verify_round_trips_and_rejects_tampering() {
        let key = Key::generate().unwrap();
        let sig = key.sign(b"hello");
        assert!(key.verify(b"hello", &sig));
        assert!(!key.verify(b"hellp", &sig));
        assert!(!key.verify(b"hello", "v1=00"));
        assert!(!key.verify(b"hello", &sig.replace("v1=", "v2=")));
    }

    #[test]
    fn from_hex_rejects_uppercase_and_wrong_length() {
        assert!(matches!(Key::from_hex("AB"), Err(KeyError::BadLength(2))));
        let upper = "A".repeat(64);
        assert!(matches!(Key::from_hex(&upper), Err(KeyError::NotHex)));
        let ok = format!("{}\n", "a".repeat(64));
        assert!(Key::from_hex(&ok).is_ok());
    }
}
