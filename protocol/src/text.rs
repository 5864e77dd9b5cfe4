//! Text segments: NUL-terminated `key=value` pairs, and continuation across PDUs (C bit).
//!
//! CONTRACT: `parse_pairs(&[u8]) -> Result<Vec<(String, String)>, TextError>` (keys and values
//! validated for the RFC 7143 character rules and length limits), `encode_pairs(&[(K, V)]) -> Vec<u8>`,
//! and `TextAccumulator` that gathers C-bit continued segments up to a byte limit.
//!
//! Also [`split_segments`], which cuts a long outgoing text buffer into data segments of at most
//! MaxRecvDataSegmentLength bytes: every piece but the last goes out with the C bit set.
//!
//! Rules applied (RFC 7143 section 6.1): a key is 1 to 63 bytes of `a-z A-Z 0-9 . - + @ _`
//! (plus `#`, used by `X#` extension keys); a value is UTF-8 without NUL, at most
//! [`MAX_VALUE_LEN`] bytes (generous: the binary-encoded CHAP values are the longest). Empty
//! entries (two NULs in a row) are skipped and the final NUL may be missing.

use bytes::{Bytes, BytesMut};

/// Longest key name (RFC 7143 section 6.1).
pub const MAX_KEY_LEN: usize = 63;
/// Longest value accepted.
pub const MAX_VALUE_LEN: usize = 8192;

/// Why a text segment was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("text entry without '='")]
    MissingEquals,
    #[error("empty key")]
    EmptyKey,
    #[error("key of {0} bytes exceeds {MAX_KEY_LEN}")]
    KeyTooLong(usize),
    #[error("value of {0} bytes exceeds {MAX_VALUE_LEN}")]
    ValueTooLong(usize),
    #[error("invalid character in key")]
    InvalidKeyChar,
    #[error("text is not valid UTF-8")]
    NotUtf8,
    #[error("continued text exceeds {0} bytes")]
    TooLong(usize),
}

/// Is `c` allowed in a key name?
#[inline]
pub fn is_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'+' | b'@' | b'_' | b'#')
}

fn parse_pair(entry: &[u8]) -> Result<(String, String), TextError> {
    let eq = entry
        .iter()
        .position(|&c| c == b'=')
        .ok_or(TextError::MissingEquals)?;
    let (key, value) = entry.split_at(eq);
    let value = value.get(1..).unwrap_or(&[]);
    if key.is_empty() {
        return Err(TextError::EmptyKey);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TextError::KeyTooLong(key.len()));
    }
    if !key.iter().copied().all(is_key_char) {
        return Err(TextError::InvalidKeyChar);
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(TextError::ValueTooLong(value.len()));
    }
    // Keys are ASCII (checked above); values may be any UTF-8.
    let key = std::str::from_utf8(key).map_err(|_| TextError::NotUtf8)?;
    let value = std::str::from_utf8(value).map_err(|_| TextError::NotUtf8)?;
    Ok((key.to_owned(), value.to_owned()))
}

/// Parse a complete text buffer (all continued segments joined) into `(key, value)` pairs, in
/// order. Duplicate keys are kept (negotiation decides what they mean).
pub fn parse_pairs(data: &[u8]) -> Result<Vec<(String, String)>, TextError> {
    data.split(|&c| c == 0)
        .filter(|e| !e.is_empty())
        .map(parse_pair)
        .collect()
}

/// Encode pairs as `key=value\0...`.
pub fn encode_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let len = pairs
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.as_ref().len() + 2)
        .sum();
    let mut out = Vec::with_capacity(len);
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref().as_bytes());
        out.push(b'=');
        out.extend_from_slice(v.as_ref().as_bytes());
        out.push(0);
    }
    out
}

/// Cut `data` into pieces of at most `max_len` bytes (at any byte, as RFC 7143 allows). Send
/// each piece in its own Text/Login PDU with the C bit set on all but the last. Empty `data`
/// gives one empty piece. The pieces are zero-copy slices of `data`. A `max_len` of 0 is
/// treated as 1.
pub fn split_segments(data: Bytes, max_len: usize) -> Vec<Bytes> {
    let max_len = max_len.max(1);
    if data.len() <= max_len {
        return vec![data];
    }
    let mut out = Vec::with_capacity(data.len().div_ceil(max_len));
    let mut rest = data;
    while rest.len() > max_len {
        out.push(rest.split_to(max_len));
    }
    out.push(rest);
    out
}

/// Gathers the data segments of a sequence of Text or Login PDUs joined by the C bit.
///
/// Feed every segment to [`push`](TextAccumulator::push) with the PDU's C bit; it returns the
/// whole text once a segment with C = 0 arrives. The total is capped at `limit` bytes.
#[derive(Debug, Clone)]
pub struct TextAccumulator {
    buf: BytesMut,
    limit: usize,
}

impl TextAccumulator {
    /// An accumulator accepting at most `limit` bytes of joined text.
    pub fn new(limit: usize) -> Self {
        TextAccumulator {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Add one segment. Returns `Ok(Some(all))` when `cont` is false (the text is complete),
    /// `Ok(None)` while more segments are expected, and `Err(TooLong)` (after resetting)
    /// when the limit would be exceeded.
    pub fn push(&mut self, segment: Bytes, cont: bool) -> Result<Option<Bytes>, TextError> {
        let total = self.buf.len().saturating_add(segment.len());
        if total > self.limit {
            self.reset();
            return Err(TextError::TooLong(self.limit));
        }
        if !cont && self.buf.is_empty() {
            // The common case: one segment, handed back without copying.
            return Ok(Some(segment));
        }
        self.buf.extend_from_slice(&segment);
        if cont {
            Ok(None)
        } else {
            Ok(Some(self.buf.split().freeze()))
        }
    }

    /// Is a continued text in progress (segments buffered, final one not seen)?
    pub fn in_progress(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Bytes buffered so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// No bytes buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The byte limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Drop whatever was gathered.
    pub fn reset(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn parses_pairs() {
        let got = parse_pairs(b"InitiatorName=iqn.1993-08.org.debian:01:abc\0SessionType=Normal\0")
            .unwrap();
        assert_eq!(
            got,
            vec![
                p("InitiatorName", "iqn.1993-08.org.debian:01:abc"),
                p("SessionType", "Normal")
            ]
        );
    }

    #[test]
    fn tolerates_missing_final_nul_and_empty_entries() {
        assert_eq!(
            parse_pairs(b"A=1\0\0B=\0C=x=y").unwrap(),
            vec![p("A", "1"), p("B", ""), p("C", "x=y")]
        );
        assert_eq!(parse_pairs(b"").unwrap(), vec![]);
        assert_eq!(parse_pairs(b"\0").unwrap(), vec![]);
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(parse_pairs(b"NoEquals\0"), Err(TextError::MissingEquals));
        assert_eq!(parse_pairs(b"=v\0"), Err(TextError::EmptyKey));
        let long_key = format!("{}=v", "K".repeat(64));
        assert_eq!(
            parse_pairs(long_key.as_bytes()),
            Err(TextError::KeyTooLong(64))
        );
        let ok_key = format!("{}=v", "K".repeat(63));
        assert!(parse_pairs(ok_key.as_bytes()).is_ok());
        let long_val = format!("K={}", "v".repeat(MAX_VALUE_LEN + 1));
        assert_eq!(
            parse_pairs(long_val.as_bytes()),
            Err(TextError::ValueTooLong(MAX_VALUE_LEN + 1))
        );
        assert_eq!(parse_pairs(b"K y=1"), Err(TextError::InvalidKeyChar));
        assert_eq!(parse_pairs(b"K=\xff\xfe"), Err(TextError::NotUtf8));
    }

    #[test]
    fn utf8_values_and_extension_keys() {
        assert_eq!(
            parse_pairs("TargetAlias=disque é\0X#com.example=1\0".as_bytes()).unwrap(),
            vec![p("TargetAlias", "disque é"), p("X#com.example", "1")]
        );
    }

    #[test]
    fn encode_round_trip() {
        let pairs = [("HeaderDigest", "None"), ("MaxBurstLength", "262144")];
        let enc = encode_pairs(&pairs);
        assert_eq!(enc, b"HeaderDigest=None\0MaxBurstLength=262144\0");
        let back = parse_pairs(&enc).unwrap();
        assert_eq!(
            back,
            vec![p("HeaderDigest", "None"), p("MaxBurstLength", "262144")]
        );
        let owned = vec![(String::from("A"), String::from("B"))];
        assert_eq!(encode_pairs(&owned), b"A=B\0");
    }

    #[test]
    fn split_and_accumulate() {
        let text = Bytes::from(encode_pairs(&[
            ("SendTargets", "All"),
            ("TargetName", "iqn.2024-01.org.example:disk"),
        ]));
        for max in [1, 2, 3, 7, 16, 1000] {
            let pieces = split_segments(text.clone(), max);
            assert!(pieces.iter().all(|s| s.len() <= max));
            let mut acc = TextAccumulator::new(4096);
            let n = pieces.len();
            let mut done = None;
            for (i, s) in pieces.into_iter().enumerate() {
                let cont = i + 1 < n;
                let r = acc.push(s, cont).unwrap();
                assert_eq!(r.is_some(), !cont);
                done = r.or(done);
            }
            assert_eq!(done.unwrap(), text);
            assert!(!acc.in_progress());
        }
    }

    #[test]
    fn split_edge_cases() {
        assert_eq!(split_segments(Bytes::new(), 10), vec![Bytes::new()]);
        assert_eq!(split_segments(Bytes::from_static(b"ab"), 0).len(), 2);
        let s = split_segments(Bytes::from_static(b"abcdefgh"), 4);
        assert_eq!(
            s,
            vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")]
        );
    }

    #[test]
    fn accumulator_limit() {
        let mut acc = TextAccumulator::new(8);
        assert_eq!(acc.push(Bytes::from_static(b"12345"), true), Ok(None));
        assert!(acc.in_progress());
        assert_eq!(
            acc.push(Bytes::from_static(b"6789"), false),
            Err(TextError::TooLong(8))
        );
        assert!(!acc.in_progress());
        assert_eq!(
            acc.push(Bytes::from_static(b"12345678"), false),
            Ok(Some(Bytes::from_static(b"12345678")))
        );
    }
}
