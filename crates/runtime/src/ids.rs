//! Identifiers: generated ones, and the rules for client-chosen ones.

use rand::Rng;

/// A new id like `ld_0193c8a2f1e74b5c9a1d2e3f4a5b6c7d`: a prefix, 12 hex digits of
/// milliseconds (so ids sort by creation) and 20 random hex digits.
pub fn new_id(prefix: &str) -> String {
    let millis = chrono::Utc::now().timestamp_millis() as u64 & 0xffff_ffff_ffff;
    let random: u128 = rand::rng().random::<u128>() & ((1u128 << 80) - 1);
    format!("{prefix}_{millis:012x}{random:020x}")
}

/// Whether `id` is acceptable as a client-chosen id: 1-64 of letters, digits,
/// `.`, `_`, `-`, starting with a letter or digit.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = new_id("ld");
        let b = new_id("ld");
        assert!(is_valid_id(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 32);
    }

    #[test]
    fn client_ids() {
        assert!(is_valid_id("lead-ada.1_x"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("-x"));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id(&"a".repeat(65)));
    }
}
