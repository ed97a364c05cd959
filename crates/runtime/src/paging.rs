//! AIP-158 page tokens: opaque to callers, a keyset position to us.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

const SEP: char = '\u{1f}';

/// Encodes the sort key of the last item on a page.
pub fn encode(key: &[&str]) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1{SEP}{}", key.join(&SEP.to_string())))
}

/// Decodes a token made by [`encode`] with `parts` key parts; `None` for the
/// first page (an empty token).
pub fn decode(token: &str, parts: usize) -> Result<Option<Vec<String>>, ApiError> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || ApiError::field("page_token", "is not a token from a previous page of this list");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let mut it = text.split(SEP);
    if it.next() != Some("v1") {
        return Err(invalid());
    }
    let key: Vec<String> = it.map(str::to_owned).collect();
    if key.len() != parts {
        return Err(invalid());
    }
    Ok(Some(key))
}

/// Parses an integer key part of a decoded token.
pub fn int(part: &str) -> Result<i64, ApiError> {
    part.parse().map_err(|_| ApiError::field("page_token", "is not a token from a previous page of this list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let t = encode(&["123", "ld_1"]);
        assert_eq!(decode(&t, 2).expect("valid"), Some(vec!["123".to_owned(), "ld_1".to_owned()]));
        assert_eq!(decode("", 2).expect("empty"), None);
        assert!(decode("garbage!", 2).is_err());
        assert!(decode(&t, 3).is_err());
    }
}
