//! Text segments: NUL-terminated `key=value` pairs, and continuation across PDUs (C bit).
//!
//! CONTRACT: `parse_pairs(&[u8]) -> Result<Vec<(String, String)>, TextError>` (keys and values
//! validated for the RFC 7143 character rules and length limits), `encode_pairs(&[(K, V)]) -> Vec<u8>`,
//! and `TextAccumulator` that gathers C-bit continued segments up to a byte limit.
