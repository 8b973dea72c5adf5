//! User passwords: argon2id with the crate's defaults (OWASP: m=19 MiB, t=2, p=1).
//! Hashing runs on the blocking pool so it never stalls the async workers.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use aws_lc_rs::rand::SecureRandom;

pub fn hash(password: &str, rng: &dyn SecureRandom) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt)
        .map_err(|_| "random source failed".to_owned())?;
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("password hashing failed: {e}"))
}

pub fn verify(password: &str, stored: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), stored)
        .is_ok()
}
