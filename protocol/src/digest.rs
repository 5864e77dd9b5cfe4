//! CRC32C digests as iSCSI puts them on the wire.
