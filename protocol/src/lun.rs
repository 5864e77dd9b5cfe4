//! LUN field helpers: the 8-byte LUN of the BHS (`u64`, big-endian) to and from a plain LU
//! number, using the SAM single-level addressing methods initiators use: peripheral device
//! addressing (method 00b) for LUNs below 256 and flat space addressing (method 01b) up to
//! 16383.

/// Largest LU number that single-level flat space addressing can carry.
pub const MAX_FLAT_LUN: u16 = 0x3fff;

/// The BHS LUN field for LU number `lun` (values above 16383 are masked to 14 bits).
pub fn to_wire(lun: u16) -> u64 {
    let lun = lun & MAX_FLAT_LUN;
    let [hi, lo] = lun.to_be_bytes();
    let first = if lun < 256 { 0x00 } else { 0x40 | hi };
    u64::from_be_bytes([first, lo, 0, 0, 0, 0, 0, 0])
}

/// The LU number in a BHS LUN field, `None` for multi-level or other addressing methods.
pub fn from_wire(field: u64) -> Option<u16> {
    let [b0, b1, rest @ ..] = field.to_be_bytes();
    if rest != [0u8; 6] {
        return None;
    }
    match b0 >> 6 {
        // Peripheral device addressing, bus 0.
        0b00 if b0 == 0 => Some(u16::from(b1)),
        // Flat space addressing.
        0b01 => Some(u16::from_be_bytes([b0 & 0x3f, b1])),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for n in [0u16, 1, 255, 256, 1000, MAX_FLAT_LUN] {
            assert_eq!(from_wire(to_wire(n)), Some(n));
        }
        assert_eq!(to_wire(0), 0);
        assert_eq!(to_wire(1), 0x0001_0000_0000_0000);
        assert_eq!(to_wire(256), 0x4100_0000_0000_0000);
        assert_eq!(from_wire(0x0001_0000_0000_0001), None);
        assert_eq!(from_wire(0x8001_0000_0000_0000), None);
        assert_eq!(from_wire(0x0101_0000_0000_0000), None);
    }
}
