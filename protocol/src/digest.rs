//! CRC32C digests as iSCSI puts them on the wire.
//!
//! The digest is the standard CRC32C (Castagnoli, reflected, initial value and final XOR
//! all ones). On the wire its 32-bit value goes least significant byte first: the RFC 3720 /
//! RFC 7143 examples give 32 zero bytes the wire bytes `aa 36 91 8a`, i.e. the value
//! `0x8a9136aa` in little-endian order.
//!
//! The header digest covers the BHS and the AHS; the data digest covers the data segment
//! including its padding.

/// CRC32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continue a CRC32C over more bytes (`crc` is the value returned for the earlier bytes).
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// The four wire bytes of the digest of `data`.
#[inline]
pub fn digest_bytes(data: &[u8]) -> [u8; 4] {
    crc32c(data).to_le_bytes()
}

/// Decode four wire bytes into a digest value.
#[inline]
pub fn from_wire(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// Does `wire` (the 4 bytes following `data`) match the digest of `data`?
#[inline]
pub fn verify(data: &[u8], wire: &[u8]) -> bool {
    wire == crc32c(data).to_le_bytes().as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 3720 appendix B.4 / RFC 7143 examples: CRC given as wire byte sequences.
    #[test]
    fn rfc_vectors() {
        assert_eq!(digest_bytes(&[0u8; 32]), [0xaa, 0x36, 0x91, 0x8a]);
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(digest_bytes(&[0xffu8; 32]), [0x43, 0xab, 0xa8, 0x62]);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(digest_bytes(&inc), [0x4e, 0x79, 0xdd, 0x46]);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(digest_bytes(&dec), [0x5c, 0xdb, 0x3f, 0x11]);
    }

    #[test]
    fn append_matches_whole() {
        let data: Vec<u8> = (0u8..100).collect();
        let (a, b) = data.split_at(37);
        assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data));
    }

    #[test]
    fn verify_works() {
        let data = b"hello iscsi";
        let d = digest_bytes(data);
        assert!(verify(data, &d));
        assert!(!verify(data, &[0, 0, 0, 0]));
        assert!(!verify(data, &d[..3]));
        assert_eq!(from_wire(d), crc32c(data));
    }
}
