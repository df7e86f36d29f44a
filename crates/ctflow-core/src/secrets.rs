//! The AI gateway's secrets (provider API keys and credentials), sealed at rest: each
//! secret's value is encrypted with its own random data key (AES-256-GCM, the secret's id
//! and name as associated data, so a sealed value cannot be moved to another secret); the
//! data key is wrapped with a key-encryption key derived from a passphrase the operator
//! puts in the server's environment (PBKDF2-HMAC-SHA256, 600,000 rounds, as MLflow).
//! Values leave only masked (`sk-...2345`).

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::Sha256;

use crate::MlflowError;

/// The environment variable that holds the passphrase (MLflow's name for it).
pub const PASSPHRASE_ENV: &str = "MLFLOW_CRYPTO_KEK_PASSPHRASE";
/// PBKDF2 rounds (OWASP's 2023 advice for PBKDF2-HMAC-SHA256, as MLflow uses).
pub const KDF_ROUNDS: u32 = 600_000;
/// The version of the key derivation stored with each secret.
pub const KEK_VERSION: u32 = 1;
/// Key derivation is for one purpose here, so its salt is fixed (with the version folded in).
const KEK_SALT: &[u8] = b"ctflow/ai-gateway/secrets/kek";

/// The key-encryption key.
#[derive(Clone)]
pub struct Kek(Key<Aes256Gcm>);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    /// Derives the key from a passphrase (slow by design: derive once per process).
    pub fn derive(passphrase: &str) -> Kek {
        let mut salt = KEK_SALT.to_vec();
        salt.extend_from_slice(&KEK_VERSION.to_be_bytes());
        let mut key = [0u8; 32];
        pbkdf2::pbkdf2_hmac::<Sha256>(passphrase.as_bytes(), &salt, KDF_ROUNDS, &mut key);
        Kek(key.into())
    }
}

/// A sealed secret as stored: base64 text of the wrapped data key and of the value, each
/// with its nonce in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The data key, encrypted with the KEK.
    pub wrapped_key: String,
    /// The value (JSON text of its key/value map), encrypted with the data key.
    pub ciphertext: String,
    /// The KEK derivation's version.
    pub kek_version: u32,
}

fn sealing_failed() -> MlflowError {
    MlflowError::new(crate::ErrorCode::InternalError, "Cannot seal the secret")
}

fn opening_failed() -> MlflowError {
    MlflowError::invalid(
        "Cannot open the stored secret: the server's passphrase is not the one it was sealed with",
    )
}

fn encrypt(key: &Key<Aes256Gcm>, plaintext: &[u8], aad: &[u8]) -> Result<String, MlflowError> {
    let nonce = Nonce::generate();
    let ciphertext = Aes256Gcm::new(key)
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| sealing_failed())?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ciphertext);
    Ok(STANDARD.encode(out))
}

fn decrypt(key: &Key<Aes256Gcm>, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, MlflowError> {
    let bytes = STANDARD.decode(sealed).map_err(|_| opening_failed())?;
    if bytes.len() < 12 {
        return Err(opening_failed());
    }
    let (nonce, ciphertext) = bytes.split_at(12);
    let nonce = Nonce::try_from(nonce).map_err(|_| opening_failed())?;
    Aes256Gcm::new(key)
        .decrypt(
            &nonce,
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| opening_failed())
}

fn value_aad(secret_id: &str, name: &str) -> Vec<u8> {
    format!("{secret_id}\u{0}{name}").into_bytes()
}

/// Seals a secret's value for `secret_id` named `name`.
pub fn seal(
    kek: &Kek,
    secret_id: &str,
    name: &str,
    value: &BTreeMap<String, String>,
) -> Result<Sealed, MlflowError> {
    let data_key = Key::<Aes256Gcm>::generate();
    let plaintext = serde_json::to_vec(value).map_err(|_| sealing_failed())?;
    Ok(Sealed {
        wrapped_key: encrypt(&kek.0, data_key.as_slice(), secret_id.as_bytes())?,
        ciphertext: encrypt(&data_key, &plaintext, &value_aad(secret_id, name))?,
        kek_version: KEK_VERSION,
    })
}

/// Opens a sealed secret: the counterpart of [`seal`], used only for the gateway's provider
/// call that needs it (the value never leaves the server).
pub fn open(
    kek: &Kek,
    secret_id: &str,
    name: &str,
    sealed: &Sealed,
) -> Result<BTreeMap<String, String>, MlflowError> {
    let key_bytes = decrypt(&kek.0, &sealed.wrapped_key, secret_id.as_bytes())?;
    let data_key =
        Key::<Aes256Gcm>::try_from(key_bytes.as_slice()).map_err(|_| opening_failed())?;
    let plaintext = decrypt(&data_key, &sealed.ciphertext, &value_aad(secret_id, name))?;
    serde_json::from_slice(&plaintext).map_err(|_| opening_failed())
}

/// A value as it may be shown: its first 3 and last 4 characters, or `***` when shorter
/// than 8 (MLflow's rule).
pub fn mask(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 8 {
        return "***".into();
    }
    let prefix: String = chars[..3].iter().collect();
    let suffix: String = chars[chars.len() - 4..].iter().collect();
    format!("{prefix}...{suffix}")
}

/// Every value of a secret masked.
pub fn masked(value: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    value.iter().map(|(k, v)| (k.clone(), mask(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        // NB: the rounds are the real ones; the test derives once.
        Kek::derive("a test passphrase of at least thirty-two characters")
    }

    #[test]
    fn sealed_values_open_only_under_their_own_id_name_and_key() {
        let kek = kek();
        let value: BTreeMap<String, String> =
            [("api_key".to_string(), "sk-test-12345".to_string())].into();
        let sealed = seal(&kek, "s-1", "openai", &value).expect("sealed");
        assert!(!sealed.ciphertext.contains("sk-test"));
        assert_eq!(open(&kek, "s-1", "openai", &sealed).expect("opened"), value);
        // Moved to another secret, renamed, or under another passphrase: refused.
        assert!(open(&kek, "s-2", "openai", &sealed).is_err());
        assert!(open(&kek, "s-1", "other", &sealed).is_err());
        assert!(
            open(
                &Kek::derive("another passphrase entirely, also long"),
                "s-1",
                "openai",
                &sealed
            )
            .is_err()
        );
        // Two seals of one value differ (fresh keys and nonces).
        assert_ne!(seal(&kek, "s-1", "openai", &value).expect("sealed"), sealed);
    }

    #[test]
    fn masks_follow_mlflows_rule() {
        assert_eq!(mask("sk-test-12345"), "sk-...2345");
        assert_eq!(mask("AKIATEST1234"), "AKI...1234");
        assert_eq!(mask("abc"), "***");
        assert_eq!(mask("1234567"), "***");
        assert_eq!(mask("éééééééé"), "ééé...éééé");
    }
}
