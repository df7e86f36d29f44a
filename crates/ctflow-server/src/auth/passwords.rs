//! Passwords and tokens: argon2id hashes, checked at most one per core at a time in
//! reused memory, and API tokens kept as their SHA-256.

use super::*;

/// An argon2id hash (PHC string) of `password` with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, MlflowError> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| internal(format!("no randomness: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| internal(e.to_string()))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| internal(format!("cannot hash the password: {e}")))
}

/// Runs argon2 checks, at most one per core at a time, each in working memory that is
/// allocated once and reused. NB: argon2 needs 19 MiB per check; unbounded, a flood of
/// wrong passwords ran hundreds at once and the allocator kept the gigabytes after.
pub(super) struct PasswordChecker {
    permits: Semaphore,
    memory: Mutex<Vec<Vec<argon2::Block>>>,
}

/// No checker was free in time.
pub(super) struct CheckerBusy;

impl PasswordChecker {
    pub(super) fn new(concurrency: usize) -> PasswordChecker {
        PasswordChecker {
            permits: Semaphore::new(concurrency.max(1)),
            memory: Mutex::new(Vec::new()),
        }
    }

    pub(super) async fn verify(&self, hash: String, password: String) -> Result<bool, CheckerBusy> {
        let permit = tokio::time::timeout(CHECK_QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| CheckerBusy)?
            .map_err(|_| CheckerBusy)?;
        let mut memory = lock(&self.memory).pop().unwrap_or_default();
        let checked = tokio::task::spawn_blocking(move || {
            let ok = verify_password_in(&hash, &password, &mut memory);
            (ok, memory)
        })
        .await;
        drop(permit);
        match checked {
            Ok((ok, memory)) => {
                lock(&self.memory).push(memory);
                Ok(ok)
            }
            Err(_) => Ok(false),
        }
    }

    /// Hashes a new password under the same bound.
    pub(super) async fn hash(&self, password: String) -> ApiResult<String> {
        let _permit = tokio::time::timeout(CHECK_QUEUE_WAIT, self.permits.acquire())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ApiError::from(internal(format!("password hashing stopped: {e}"))))?
            .map_err(ApiError::from)
    }
}

/// Checks `password` against an argon2 PHC string, computing in `memory` (grown to the
/// hash's memory cost if smaller). The comparison is constant-time.
fn verify_password_in(hash: &str, password: &str, memory: &mut Vec<argon2::Block>) -> bool {
    use argon2::password_hash::{Output, PasswordHash};
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        argon2::Params::try_from(&parsed),
        argon2::Algorithm::try_from(parsed.algorithm),
    ) else {
        return false;
    };
    let Ok(version) = parsed.version.map(argon2::Version::try_from).transpose() else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut computed = vec![0u8; expected.len()];
    let hasher = argon2::Argon2::new(algorithm, version.unwrap_or_default(), params);
    hasher
        .hash_password_into_with_memory(
            password.as_bytes(),
            salt,
            &mut computed,
            &mut memory[..blocks],
        )
        .is_ok()
        && Output::new(&computed).is_ok_and(|computed| computed == expected)
}

/// 503 with `Retry-After`: every password checker was busy.
pub(super) fn busy() -> ApiError {
    ApiError::from(MlflowError::new(
        ErrorCode::TemporarilyUnavailable,
        "Too many sign-ins are being checked at once; try again shortly (API tokens are not affected)",
    ))
}

/// An error answered with a `Retry-After` of `wait` (rounded up to whole seconds).
pub(super) fn with_retry_after(error: ApiError, wait: Duration) -> Response {
    let mut response = error.into_response();
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The hash checked for names that have no user. It only has to cost what checking a
/// real one does: a match signs nobody in, as there is no user to sign in.
pub(super) fn unknown_user_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let mut secret = [0u8; 32];
        let _ = getrandom::fill(&mut secret);
        hash_password(&hex::encode(secret)).unwrap_or_default()
    })
}

/// How every API token starts (so a token sent as a Basic password is told from a password).
pub const TOKEN_PREFIX: &str = "ctf_";

/// A new API token and the SHA-256 the store keeps of it.
pub fn new_token() -> Result<(String, String), MlflowError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| internal(format!("no randomness: {e}")))?;
    let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub(super) fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
