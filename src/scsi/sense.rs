//! Sense data: every error a command can end with is a [`ScsiError`]; this file is the only
//! place that turns one into status and sense bytes.

use bytes::Bytes;

use crate::storage::StorageError;

pub const STATUS_GOOD: u8 = 0x00;
pub const STATUS_CHECK_CONDITION: u8 = 0x02;
pub const STATUS_CONDITION_MET: u8 = 0x04;
pub const STATUS_RESERVATION_CONFLICT: u8 = 0x18;

/// Sense keys (SPC-4 table 45).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    CopyAborted = 0xA,
    AbortedCommand = 0xB,
    Miscompare = 0xE,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScsiError {
    /// 5/20/00 INVALID COMMAND OPERATION CODE.
    InvalidOpcode,
    /// 5/24/00 INVALID FIELD IN CDB; `byte`/`bit` feed the sense-key-specific field pointer.
    InvalidFieldInCdb { byte: u16, bit: Option<u8> },
    /// 5/26/00 INVALID FIELD IN PARAMETER LIST.
    InvalidFieldInParam { byte: u16, bit: Option<u8> },
    /// 5/1A/00 PARAMETER LIST LENGTH ERROR.
    ParamListLength,
    /// 5/0E/03 INVALID FIELD IN COMMAND INFORMATION UNIT (Data-Out shorter than required).
    InvalidFieldInIu,
    /// 5/21/00 LOGICAL BLOCK ADDRESS OUT OF RANGE.
    LbaOutOfRange,
    /// 5/25/00 LOGICAL UNIT NOT SUPPORTED.
    LunNotSupported,
    /// 5/39/00 SAVING PARAMETERS NOT SUPPORTED.
    SavingParamsUnsupported,
    /// 5/2C/00 COMMAND SEQUENCE ERROR.
    CommandSequence,
    /// 5/26/04 INVALID RELEASE OF PERSISTENT RESERVATION.
    InvalidRelease,
    /// 5/55/04 INSUFFICIENT REGISTRATION RESOURCES.
    NoRegistrationResources,
    /// 5/26/xx parameter list errors of EXTENDED COPY (06 too many target descriptors,
    /// 07 unsupported target descriptor type, 08 too many segment descriptors,
    /// 09 unsupported segment descriptor type).
    ParamValue { ascq: u8 },
    /// 7/27/00 WRITE PROTECTED.
    WriteProtected,
    /// 7/27/07 SPACE ALLOCATION FAILED WRITE PROTECT.
    SpaceAllocationFailed,
    /// E/1D/00 MISCOMPARE DURING VERIFY OPERATION; `offset` goes in INFORMATION.
    Miscompare { offset: u64 },
    /// 6/asc/ascq UNIT ATTENTION.
    UnitAttention { asc: u8, ascq: u8 },
    /// 3/11/00 UNRECOVERED READ ERROR.
    ReadError,
    /// 3/0C/00 WRITE ERROR.
    WriteError,
    /// 4/44/00 INTERNAL TARGET FAILURE.
    InternalFailure,
    /// A/0D/02 COPY TARGET DEVICE NOT REACHABLE.
    CopyTargetUnreachable,
    /// A/xx/yy: a copy segment failed on the way.
    CopyAborted { asc: u8, ascq: u8 },
    /// 2/04/1B LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS.
    SanitizeInProgress,
    /// 3/31/03 SANITIZE COMMAND FAILED (the logical unit is in sanitize failure mode).
    SanitizeFailed,
    /// Status RESERVATION CONFLICT, no sense data.
    ReservationConflict,
}

/// The fields of one sense report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenseFields {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    pub info: Option<u64>,
    /// Sense-key-specific bytes (SKSV set).
    pub sks: Option<[u8; 3]>,
}

fn field_pointer(cd: bool, byte: u16, bit: Option<u8>) -> [u8; 3] {
    let mut b0 = 0x80 | if cd { 0x40 } else { 0 };
    if let Some(bit) = bit {
        b0 |= 0x08 | (bit & 7);
    }
    let [hi, lo] = byte.to_be_bytes();
    [b0, hi, lo]
}

impl ScsiError {
    pub fn invalid_cdb(byte: u16) -> Self {
        ScsiError::InvalidFieldInCdb { byte, bit: None }
    }

    pub fn invalid_param(byte: u16) -> Self {
        ScsiError::InvalidFieldInParam { byte, bit: None }
    }

    /// Status byte and, for CHECK CONDITION, the sense fields.
    pub fn fields(&self) -> Option<SenseFields> {
        use ScsiError::*;
        use SenseKey::*;
        let f = |key, asc, ascq| SenseFields {
            key,
            asc,
            ascq,
            info: None,
            sks: None,
        };
        Some(match *self {
            InvalidOpcode => f(IllegalRequest, 0x20, 0),
            InvalidFieldInCdb { byte, bit } => SenseFields {
                sks: Some(field_pointer(true, byte, bit)),
                ..f(IllegalRequest, 0x24, 0)
            },
            InvalidFieldInParam { byte, bit } => SenseFields {
                sks: Some(field_pointer(false, byte, bit)),
                ..f(IllegalRequest, 0x26, 0)
            },
            ParamListLength => f(IllegalRequest, 0x1A, 0),
            InvalidFieldInIu => f(IllegalRequest, 0x0E, 0x03),
            LbaOutOfRange => f(IllegalRequest, 0x21, 0),
            LunNotSupported => f(IllegalRequest, 0x25, 0),
            SavingParamsUnsupported => f(IllegalRequest, 0x39, 0),
            CommandSequence => f(IllegalRequest, 0x2C, 0),
            InvalidRelease => f(IllegalRequest, 0x26, 0x04),
            NoRegistrationResources => f(IllegalRequest, 0x55, 0x04),
            ParamValue { ascq } => f(IllegalRequest, 0x26, ascq),
            WriteProtected => f(DataProtect, 0x27, 0),
            SpaceAllocationFailed => f(DataProtect, 0x27, 0x07),
            ScsiError::Miscompare { offset } => SenseFields {
                info: Some(offset),
                ..f(SenseKey::Miscompare, 0x1D, 0)
            },
            ScsiError::UnitAttention { asc, ascq } => f(SenseKey::UnitAttention, asc, ascq),
            ReadError => f(MediumError, 0x11, 0),
            WriteError => f(MediumError, 0x0C, 0),
            InternalFailure => f(HardwareError, 0x44, 0),
            CopyTargetUnreachable => f(SenseKey::CopyAborted, 0x0D, 0x02),
            ScsiError::CopyAborted { asc, ascq } => f(SenseKey::CopyAborted, asc, ascq),
            SanitizeInProgress => f(NotReady, 0x04, 0x1B),
            SanitizeFailed => f(MediumError, 0x31, 0x03),
            ReservationConflict => return None,
        })
    }

    pub fn status(&self) -> u8 {
        match self {
            ScsiError::ReservationConflict => STATUS_RESERVATION_CONFLICT,
            _ => STATUS_CHECK_CONDITION,
        }
    }

    /// Map a storage failure on the write path.
    pub fn from_write(e: StorageError) -> Self {
        match e {
            StorageError::OutOfRange { .. } => ScsiError::LbaOutOfRange,
            StorageError::ReadOnly => ScsiError::WriteProtected,
            StorageError::NoSpace => ScsiError::SpaceAllocationFailed,
            StorageError::Io(_) => ScsiError::WriteError,
            StorageError::CannotResize(_) => ScsiError::InternalFailure,
        }
    }

    /// Map a storage failure on the read path.
    pub fn from_read(e: StorageError) -> Self {
        match e {
            StorageError::OutOfRange { .. } => ScsiError::LbaOutOfRange,
            StorageError::ReadOnly | StorageError::NoSpace | StorageError::CannotResize(_) => {
                ScsiError::InternalFailure
            }
            StorageError::Io(_) => ScsiError::ReadError,
        }
    }
}

/// Encode sense data, fixed format (70h) or descriptor format (72h).
pub fn encode(f: &SenseFields, descriptor: bool) -> Bytes {
    if descriptor {
        let mut v = vec![0x72, f.key as u8, f.asc, f.ascq, 0, 0, 0, 0];
        if let Some(info) = f.info {
            v.extend_from_slice(&[0x00, 0x0A, 0x80, 0]);
            v.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = f.sks {
            v.extend_from_slice(&[0x02, 0x06, 0, 0, sks[0], sks[1], sks[2], 0]);
        }
        v[7] = (v.len() - 8) as u8;
        Bytes::from(v)
    } else {
        let mut v = vec![0u8; 18];
        v[0] = 0x70;
        v[2] = f.key as u8;
        if let Some(info) = f.info {
            v[0] |= 0x80;
            // INFORMATION is four bytes in fixed format; saturate larger values.
            let i = u32::try_from(info).unwrap_or(u32::MAX);
            v[3..7].copy_from_slice(&i.to_be_bytes());
        }
        v[7] = 10;
        v[12] = f.asc;
        v[13] = f.ascq;
        if let Some(sks) = f.sks {
            v[15..18].copy_from_slice(&sks);
        }
        Bytes::from(v)
    }
}

/// Fixed-format "no sense" data (REQUEST SENSE with nothing pending).
pub fn no_sense(descriptor: bool) -> Bytes {
    encode(
        &SenseFields {
            key: SenseKey::NoSense,
            asc: 0,
            ascq: 0,
            info: None,
            sks: None,
        },
        descriptor,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_descriptor() {
        let f = ScsiError::Miscompare { offset: 513 }.fields().unwrap();
        let s = encode(&f, false);
        assert_eq!(s[0], 0xF0);
        assert_eq!(s[2], 0x0E);
        assert_eq!(&s[3..7], &513u32.to_be_bytes());
        assert_eq!((s[12], s[13]), (0x1D, 0));
        let d = encode(&f, true);
        assert_eq!(d[0], 0x72);
        assert_eq!((d[1], d[2], d[3]), (0x0E, 0x1D, 0));
        assert_eq!(d[7] as usize, d.len() - 8);
        assert_eq!(&d[12..20], &513u64.to_be_bytes());
        let f = ScsiError::invalid_cdb(2).fields().unwrap();
        let s = encode(&f, false);
        assert_eq!(&s[15..18], &[0xC0, 0, 2]);
        assert!(ScsiError::ReservationConflict.fields().is_none());
    }
}
