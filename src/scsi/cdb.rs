//! Bounds-checked big-endian field access for CDBs and parameter lists.

use super::sense::ScsiError;

/// Big-endian unsigned integer of `n` bytes at `off`; `None` if `buf` is too short.
pub fn be(buf: &[u8], off: usize, n: usize) -> Option<u64> {
    let s = buf.get(off..off.checked_add(n)?)?;
    Some(s.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
}

/// A CDB field; a short CDB is an invalid field.
pub fn field(cdb: &[u8], off: usize, n: usize) -> Result<u64, ScsiError> {
    be(cdb, off, n).ok_or(ScsiError::invalid_cdb(off as u16))
}

/// A parameter-list field; a short list is a parameter list length error.
pub fn param(buf: &[u8], off: usize, n: usize) -> Result<u64, ScsiError> {
    be(buf, off, n).ok_or(ScsiError::ParamListLength)
}

/// One CDB byte (0 when absent; lengths are checked before handlers run).
pub fn byte(cdb: &[u8], off: usize) -> u8 {
    cdb.get(off).copied().unwrap_or(0)
}

pub fn put_be(buf: &mut [u8], off: usize, n: usize, v: u64) {
    for i in 0..n {
        if let Some(b) = buf.get_mut(off + i) {
            *b = (v >> (8 * (n - 1 - i))) as u8;
        }
    }
}

/// Truncate produced data to an allocation length.
pub fn truncate(mut v: Vec<u8>, alloc: u64) -> Vec<u8> {
    if (v.len() as u64) > alloc {
        v.truncate(alloc as usize);
    }
    v
}

/// ASCII field padded with spaces (SPC left-aligned ASCII).
pub fn ascii(s: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s
        .bytes()
        .filter(|b| (0x20..0x7f).contains(b))
        .take(len)
        .collect();
    v.resize(len, b' ');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let b = [1u8, 2, 3, 4];
        assert_eq!(be(&b, 1, 2), Some(0x0203));
        assert_eq!(be(&b, 3, 2), None);
        assert_eq!(be(&b, usize::MAX, 2), None);
        let mut o = [0u8; 4];
        put_be(&mut o, 0, 4, 0xdeadbeef);
        assert_eq!(o, [0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(ascii("ab", 4), b"ab  ");
    }
}
