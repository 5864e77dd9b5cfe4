//! INQUIRY: standard data and the vital product data pages.

use super::cdb::{ascii, field, put_be, truncate};
use super::lu::{CmdResult, Ctx, LogicalUnit, Reply};
use super::sense::ScsiError;

/// Largest READ/WRITE/VERIFY transfer, in bytes (MAXIMUM TRANSFER LENGTH in blocks = this / bs).
pub(crate) const MAX_TRANSFER_BYTES: u64 = 32 << 20;
/// MAXIMUM UNMAP LBA COUNT (per descriptor and per command).
pub(crate) const MAX_UNMAP_LBAS: u64 = 1 << 20;
/// Largest WRITE ATOMIC (16) transfer, in bytes.
pub(crate) const MAX_ATOMIC_BYTES: u64 = 1 << 20;
/// MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u64 = 1024;
/// MAXIMUM COMPARE AND WRITE LENGTH.
pub(crate) const MAX_CAW_BLOCKS: u64 = 255;

const SUPPORTED_PAGES: &[u8] = &[0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2];

/// Protocol identifier of iSCSI, for designators with PIV set.
const PROTO_ISCSI: u8 = 0x5;

impl LogicalUnit {
    pub(crate) fn max_transfer_blocks(&self) -> u64 {
        (MAX_TRANSFER_BYTES / self.block_size().max(1) as u64).max(1)
    }

    /// MAXIMUM ATOMIC TRANSFER LENGTH; WRITE ATOMIC (16) carries a 16-bit length.
    pub(crate) fn max_atomic_blocks(&self) -> u64 {
        (MAX_ATOMIC_BYTES / self.block_size().max(1) as u64).clamp(1, 0xFFFF)
    }

    /// The NAA designator value (8 bytes, NAA 5).
    pub(crate) fn naa_bytes(&self) -> [u8; 8] {
        ((self.config.naa_id & 0x0FFF_FFFF_FFFF_FFFF) | (0x5 << 60)).to_be_bytes()
    }

    fn standard_inquiry(&self) -> Vec<u8> {
        let mut d = vec![0u8; 74];
        d[0] = 0x00; // connected, direct access block device
        d[2] = 0x06; // SPC-4
        d[3] = 0x12; // HISUP, response data format 2
        d[5] = 0x08; // 3PC: EXTENDED COPY
        d[7] = 0x02; // CMDQUE
        d[8..16].copy_from_slice(&ascii(&self.config.vendor, 8));
        d[16..32].copy_from_slice(&ascii(&self.config.product, 16));
        d[32..36].copy_from_slice(&ascii(&self.config.revision, 4));
        // Version descriptors: SAM-5, iSCSI, SPC-4, SBC-3.
        for (i, v) in [0x00A0u16, 0x0960, 0x0460, 0x04C0].iter().enumerate() {
            put_be(&mut d, 58 + 2 * i, 2, *v as u64);
        }
        d[4] = (d.len() - 5) as u8;
        d
    }

    fn vpd_page(&self, ctx: &Ctx, page: u8) -> Result<Vec<u8>, ScsiError> {
        let mut d = vec![0x00, page, 0, 0];
        match page {
            0x00 => d.extend_from_slice(SUPPORTED_PAGES),
            0x80 => d.extend_from_slice(
                &self
                    .config
                    .serial
                    .bytes()
                    .filter(|b| (0x20..0x7f).contains(b))
                    .take(250)
                    .collect::<Vec<u8>>(),
            ),
            0x83 => self.device_identification(ctx, &mut d),
            0xB0 => {
                d.resize(64, 0);
                // WSNZ clear: NUMBER OF LOGICAL BLOCKS zero in WRITE SAME means "to the end".
                d[5] = MAX_CAW_BLOCKS as u8;
                put_be(&mut d, 6, 2, 1);
                put_be(&mut d, 8, 4, self.max_transfer_blocks());
                put_be(&mut d, 12, 4, self.max_transfer_blocks());
                if self.config.thin {
                    put_be(&mut d, 20, 4, MAX_UNMAP_LBAS);
                    put_be(&mut d, 24, 4, MAX_UNMAP_DESCRIPTORS);
                    put_be(&mut d, 28, 4, 1);
                }
                // MAXIMUM WRITE SAME LENGTH 0: no limit beyond the capacity.
                put_be(&mut d, 44, 4, self.max_atomic_blocks());
                // ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY 0: none required.
            }
            0xB1 => {
                d.resize(64, 0);
                put_be(&mut d, 4, 2, 1); // non-rotating medium
                if self.config.thin {
                    // WABEREQ 01b: reads after SANITIZE BLOCK ERASE succeed (they return
                    // zeros, LBPRZ). WACEREQ 0: no CRYPTO ERASE.
                    d[7] = 0x40;
                }
            }
            0xB2 => {
                d.resize(8, 0);
                if self.config.thin {
                    d[5] = 0x80 | 0x40 | 0x20 | 0x04; // LBPU LBPWS LBPWS10, LBPRZ=1
                    d[6] = 0x02; // thin provisioned
                }
            }
            _ => return Err(ScsiError::invalid_cdb(2)),
        }
        let len = d.len() as u64 - 4;
        put_be(&mut d, 2, 2, len);
        Ok(d)
    }

    fn device_identification(&self, ctx: &Ctx, d: &mut Vec<u8>) {
        let mut desig = |code_set: u8, assoc_type: u8, value: &[u8]| {
            d.extend_from_slice(&[code_set, assoc_type, 0, value.len() as u8]);
            d.extend_from_slice(value);
        };
        // NAA, logical unit.
        desig(0x01, 0x03, &self.naa_bytes());
        // T10 vendor id: vendor + volume name, logical unit.
        let mut t10 = ascii(&self.config.vendor, 8);
        t10.extend(
            self.config
                .name
                .bytes()
                .filter(|b| (0x21..0x7f).contains(b))
                .take(200),
        );
        desig(0x02, 0x01, &t10);
        let nexus = &ctx.req.nexus;
        // Relative target port, target port association.
        let mut rtp = [0u8; 4];
        put_be(&mut rtp, 2, 2, nexus.relative_port as u64);
        desig((PROTO_ISCSI << 4) | 0x01, 0x80 | 0x10 | 0x04, &rtp);
        // SCSI name strings: target port and target device.
        let name = |s: &str| {
            let mut v: Vec<u8> = s.bytes().take(250).collect();
            v.push(0);
            while v.len() % 4 != 0 {
                v.push(0);
            }
            v
        };
        if !nexus.target_port.is_empty() {
            desig(
                (PROTO_ISCSI << 4) | 0x03,
                0x80 | 0x10 | 0x08,
                &name(&nexus.target_port),
            );
            let device = nexus
                .target_port
                .split(",t,")
                .next()
                .unwrap_or(&nexus.target_port);
            desig((PROTO_ISCSI << 4) | 0x03, 0x80 | 0x20 | 0x08, &name(device));
        }
    }
}

pub(crate) fn inquiry(lu: &LogicalUnit, ctx: &Ctx) -> CmdResult {
    let evpd = ctx.cdb[1] & 0x01 != 0;
    let page = ctx.cdb[2];
    let alloc = field(ctx.cdb, 3, 2)?;
    let data = if evpd {
        lu.vpd_page(ctx, page)?
    } else {
        if page != 0 {
            return Err(ScsiError::invalid_cdb(2));
        }
        lu.standard_inquiry()
    };
    Ok(Reply::data(truncate(data, alloc)))
}
