//! `rewind verify`: an offline check of a volume's CDP journal, and a comparison of a past point
//! of the volume with an external image.
//!
//! It runs only while no daemon serves the data directory (the daemon holds the journal open).
//!
//! - **Integrity**: every segment file (`journal/primary/*.seg`, `journal/partial/*.seg`) is read
//!   and its records checksum-verified with [`crate::journal::record::scan_segment`]. A record
//!   cut short at the very end of the newest primary segment or of a partial journal is a *torn
//!   tail*: a write that a crash interrupted, which recovery cuts off. It is reported with its
//!   offset but is not an error. A checksum mismatch or a bad record anywhere, a torn record in
//!   an older (closed) primary segment, or an entry whose data length does not match its block
//!   count is *corruption*. An entry covers a run of whole chunks (one write).
//! - **Comparison** (`--at` or `--bookmark` with `--image`): the journal is opened as `serve`
//!   would open it (running crash recovery), the view at that point is read extent by extent and
//!   compared with the image by SHA-256; mismatching extents are listed.
//!
//! Exit codes (see `main.rs`): 0 intact / equal, 1 corruption or mismatch, 2 usage or cannot run.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::datadir::{DataDir, VolumeMeta};
use crate::journal::record::{scan_segment, Record, SegmentKind, Status};
use crate::journal::{JournalConfig, JournaledStore};
use crate::storage::{BlockStore, FileStore};

/// One segment file's scan.
#[derive(Debug, Clone)]
pub struct SegmentCheck {
    pub file: PathBuf,
    pub kind: &'static str,
    pub entries: u64,
    pub statuses: u64,
    /// `(ts, port, seq)` of the writes whose outcome is recorded `Failed` here.
    pub failed: Vec<(u64, u64, u64)>,
    /// Merged-window port validity records.
    pub windows: u64,
    pub len: u64,
    /// Where a scan stopped early, and why.
    pub tail: Option<(u64, String)>,
    /// The early stop is a torn tail a crash can leave (not corruption).
    pub benign_tail: bool,
}

/// The integrity part of a verification.
#[derive(Debug, Default, Clone)]
pub struct JournalCheck {
    pub segments: Vec<SegmentCheck>,
    /// Human-readable corruption findings; empty when the journal is intact.
    pub problems: Vec<String>,
}

impl JournalCheck {
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn torn_tails(&self) -> impl Iterator<Item = &SegmentCheck> {
        self.segments.iter().filter(|s| s.benign_tail)
    }
}

fn seg_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let p = e?.path();
                if p.extension().is_some_and(|x| x == "seg") {
                    v.push(p);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    v.sort();
    Ok(v)
}

/// Check every segment of the journal in `journal_dir` (read only: nothing is changed).
pub fn check_journal(journal_dir: &Path, block_size: u32) -> std::io::Result<JournalCheck> {
    check_journal_with_progress(journal_dir, block_size, &mut |_, _| {})
}

/// As [`check_journal`], calling `progress(bytes_done, bytes_total)` after each segment file.
pub fn check_journal_with_progress(
    journal_dir: &Path,
    block_size: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> std::io::Result<JournalCheck> {
    let mut out = JournalCheck::default();
    let primary = seg_files(&journal_dir.join("primary"))?;
    let partial = seg_files(&journal_dir.join("partial"))?;
    let newest_primary = primary.last().cloned();
    let total: u64 = primary
        .iter()
        .chain(&partial)
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0u64;
    progress(0, total);
    for (path, want) in primary
        .iter()
        .map(|p| (p, SegmentKind::Primary))
        .chain(partial.iter().map(|p| (p, SegmentKind::Partial)))
    {
        let buf = std::fs::read(path)?;
        // A segment still growing when the sizes were taken must not run past the total.
        done = (done + buf.len() as u64).min(total);
        progress(done, total);
        let name = path.display().to_string();
        let kind = match want {
            SegmentKind::Primary => "primary",
            SegmentKind::Partial => "partial",
        };
        let (header, scan) = match scan_segment(&buf, &name) {
            Ok(x) => x,
            Err(e) => {
                // An empty or header-less partial file can be left by a crash right after
                // creating it; anything else is corruption.
                let torn_header = want == SegmentKind::Partial
                    && buf.len() < crate::journal::record::SEGMENT_HEADER_LEN;
                if !torn_header {
                    out.problems.push(format!("{name}: {e}"));
                }
                out.segments.push(SegmentCheck {
                    file: path.clone(),
                    kind,
                    entries: 0,
                    statuses: 0,
                    failed: Vec::new(),
                    windows: 0,
                    len: buf.len() as u64,
                    tail: Some((0, e.to_string())),
                    benign_tail: torn_header,
                });
                continue;
            }
        };
        // A partial journal file adopted whole as a primary segment keeps its header.
        let adopted = want == SegmentKind::Primary && header.kind == SegmentKind::Partial;
        if header.kind != want && !adopted {
            out.problems.push(format!(
                "{name}: segment header says {:?}, found in the {kind} directory",
                header.kind
            ));
        }
        let mut check = SegmentCheck {
            file: path.clone(),
            kind,
            entries: 0,
            statuses: 0,
            failed: Vec::new(),
            windows: 0,
            len: buf.len() as u64,
            tail: None,
            benign_tail: false,
        };
        for s in &scan.records {
            match &s.record {
                Record::Entry(e) => {
                    check.entries += 1;
                    if e.status == Status::Failed {
                        check.failed.push((e.ts, e.port, e.seq));
                    }
                    let want_len = e.expected_data_len(block_size as usize);
                    if e.data.len() as u64 != want_len {
                        out.problems.push(format!(
                            "{name}: entry at offset {} (lba {}, {} blocks) holds {} bytes of old data, expected {want_len}",
                            s.offset,
                            e.lba,
                            e.blocks,
                            e.data.len()
                        ));
                    }
                    if e.chunk_blocks as u64 * block_size as u64 != header.chunk_bytes as u64
                        || e.lba % e.chunk_blocks as u64 != 0
                    {
                        out.problems.push(format!(
                            "{name}: entry at offset {} is not cut to whole {}-byte chunks",
                            s.offset, header.chunk_bytes
                        ));
                    }
                }
                Record::Status(u) => {
                    check.statuses += 1;
                    if u.status == Status::Failed {
                        check.failed.push((u.ts, u.port, u.seq));
                    }
                }
                Record::Window(_) => check.windows += 1,
            }
        }
        if let Some(t) = &scan.tail {
            check.tail = Some((t.offset, t.reason.clone()));
            let last_record = t.reason == "torn record";
            let may_be_torn = match want {
                SegmentKind::Partial => true,
                SegmentKind::Primary => Some(path) == newest_primary.as_ref(),
            };
            if last_record && may_be_torn {
                check.benign_tail = true;
            } else {
                out.problems.push(format!(
                    "{name}: bad record at offset {} of {}: {}",
                    t.offset,
                    buf.len(),
                    t.reason
                ));
            }
        }
        out.segments.push(check);
    }
    Ok(out)
}

/// One extent whose content differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub offset: u64,
    pub len: u64,
    pub view_sha256: String,
    pub image_sha256: String,
}

/// Compare `store` with the image file extent by extent. The image may be shorter than the
/// store only if the rest of the store reads as zeros; a longer image is a mismatch at the end.
pub fn compare_image(
    store: &dyn BlockStore,
    image: &Path,
    extent: u64,
) -> anyhow::Result<Vec<Mismatch>> {
    compare_image_with_progress(store, image, extent, &mut |_, _| {})
}

/// As [`compare_image`], calling `progress(bytes_done, bytes_total)` after each extent.
pub fn compare_image_with_progress(
    store: &dyn BlockStore,
    image: &Path,
    extent: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Vec<Mismatch>> {
    let bs = store.block_size() as u64;
    let extent = (extent.max(bs) / bs) * bs;
    let size = store.num_blocks() * bs;
    let mut f = std::fs::File::open(image)?;
    let image_len = f.metadata()?.len();
    let mut out = Vec::new();
    let mut a = vec![0u8; extent as usize];
    let mut b = vec![0u8; extent as usize];
    let mut off = 0;
    while off < size {
        let n = extent.min(size - off);
        let a = &mut a[..n as usize];
        let b = &mut b[..n as usize];
        store.read(off / bs, a)?;
        b.fill(0);
        let mut got = 0;
        while got < b.len() {
            let r = f.read(&mut b[got..])?;
            if r == 0 {
                break;
            }
            got += r;
        }
        if a != b {
            out.push(Mismatch {
                offset: off,
                len: n,
                view_sha256: hex::encode(Sha256::digest(&*a)),
                image_sha256: hex::encode(Sha256::digest(&*b)),
            });
        }
        off += n;
        progress(off, size);
    }
    if image_len > size {
        out.push(Mismatch {
            offset: size,
            len: image_len - size,
            view_sha256: "(beyond the end of the volume)".into(),
            image_sha256: String::new(),
        });
    }
    Ok(out)
}

/// Which point to compare.
#[derive(Debug, Clone)]
pub enum Point {
    /// µs since the epoch.
    At(u64),
    Bookmark(String),
}

/// The result of comparing a point with an image.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The retained point the view reads (µs since the epoch).
    pub point: u64,
    pub mismatches: Vec<Mismatch>,
    /// Ports whose journal was invalid around the point (the view may be incomplete).
    pub invalid_ports: Vec<u64>,
}

/// Open the volume's journal (running crash recovery, as `serve` does) and compare the view at
/// `point` with `image`.
pub fn compare_point(
    dd: &DataDir,
    meta: &VolumeMeta,
    cfg: &JournalConfig,
    point: &Point,
    image: &Path,
    extent: u64,
) -> anyhow::Result<Comparison> {
    compare_point_with_progress(dd, meta, cfg, point, image, extent, &mut |_, _| {})
}

/// As [`compare_point`], calling `progress(bytes_done, bytes_total)` while comparing.
pub fn compare_point_with_progress(
    dd: &DataDir,
    meta: &VolumeMeta,
    cfg: &JournalConfig,
    point: &Point,
    image: &Path,
    extent: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Comparison> {
    let file = FileStore::open(dd.data_path(meta), meta.block_size, true)?;
    let journal = JournaledStore::open(&journal_dir(dd, meta), Arc::new(file), cfg.clone())?;
    let ts = match point {
        Point::At(ts) => *ts,
        Point::Bookmark(name) => journal
            .bookmarks()?
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, ts)| ts)
            .ok_or_else(|| anyhow::anyhow!("no bookmark named {name:?}"))?,
    };
    let view = journal.view(ts)?;
    let invalid_ports = view.invalid_ports()?;
    let point = view.point();
    let mismatches = compare_image_with_progress(&view, image, extent, progress)?;
    Ok(Comparison {
        point,
        mismatches,
        invalid_ports,
    })
}

/// Where a volume's journal lives.
pub fn journal_dir(dd: &DataDir, meta: &VolumeMeta) -> PathBuf {
    dd.volume_dir(&meta.name).join("journal")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{encode_entry, no_unallocated, Entry, SegmentHeader, Status};

    fn entry(lba: u64, data: Vec<u8>) -> Entry {
        Entry {
            ts: 1,
            port: 1,
            seq: 1,
            lba,
            blocks: (data.len() / 512) as u32,
            chunk_blocks: 8,
            status: Status::Pending,
            unallocated: no_unallocated((data.len() as u32 / 512).div_ceil(8)),
            merged: false,
            invalid_ports: vec![],
            data,
        }
    }

    fn segment(kind: SegmentKind, id: u64, n: usize) -> Vec<u8> {
        let mut b = SegmentHeader {
            kind,
            chunk_bytes: 4096,
            id,
        }
        .encode()
        .to_vec();
        for i in 0..n {
            encode_entry(&entry(i as u64 * 8, vec![i as u8; 4096]), &mut b);
        }
        b
    }

    fn journal(primaries: &[Vec<u8>], partials: &[Vec<u8>]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("primary")).unwrap();
        std::fs::create_dir_all(d.path().join("partial")).unwrap();
        for (i, p) in primaries.iter().enumerate() {
            std::fs::write(d.path().join(format!("primary/{i:016x}.seg")), p).unwrap();
        }
        for (i, p) in partials.iter().enumerate() {
            std::fs::write(d.path().join(format!("partial/{i:016x}-0.seg")), p).unwrap();
        }
        d
    }

    #[test]
    fn intact_journal() {
        let d = journal(
            &[
                segment(SegmentKind::Primary, 0, 3),
                segment(SegmentKind::Primary, 1, 2),
            ],
            &[segment(SegmentKind::Partial, 0, 2)],
        );
        let c = check_journal(d.path(), 512).unwrap();
        assert!(c.intact(), "{:?}", c.problems);
        assert_eq!(c.segments.len(), 3);
        assert_eq!(c.segments.iter().map(|s| s.entries).sum::<u64>(), 7);
    }

    #[test]
    fn journal_check_reports_progress_per_segment() {
        let segs = [
            segment(SegmentKind::Primary, 0, 3),
            segment(SegmentKind::Primary, 1, 2),
        ];
        let partial = segment(SegmentKind::Partial, 0, 2);
        let total = (segs[0].len() + segs[1].len() + partial.len()) as u64;
        let d = journal(&segs, &[partial]);
        let mut seen = Vec::new();
        let c = check_journal_with_progress(d.path(), 512, &mut |done, t| seen.push((done, t)))
            .unwrap();
        assert!(c.intact(), "{:?}", c.problems);
        assert_eq!(
            seen.len(),
            4,
            "a start and one report per segment: {seen:?}"
        );
        assert_eq!(seen.first(), Some(&(0, total)));
        assert_eq!(seen.last(), Some(&(total, total)));
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    }

    #[test]
    fn torn_tail_of_newest_is_benign_elsewhere_corruption() {
        let mut newest = segment(SegmentKind::Primary, 1, 2);
        newest.truncate(newest.len() - 100);
        let mut partial = segment(SegmentKind::Partial, 0, 2);
        partial.truncate(partial.len() - 1);
        let d = journal(&[segment(SegmentKind::Primary, 0, 3), newest], &[partial]);
        let c = check_journal(d.path(), 512).unwrap();
        assert!(c.intact(), "{:?}", c.problems);
        assert_eq!(c.torn_tails().count(), 2);

        // The same cut in the older, closed segment is corruption.
        let mut old = segment(SegmentKind::Primary, 0, 3);
        old.truncate(old.len() - 100);
        let d = journal(&[old, segment(SegmentKind::Primary, 1, 2)], &[]);
        let c = check_journal(d.path(), 512).unwrap();
        assert!(!c.intact());
        assert!(c.problems[0].contains("torn record"), "{:?}", c.problems);
    }

    #[test]
    fn flipped_bit_is_corruption_with_offset() {
        let mut seg = segment(SegmentKind::Primary, 0, 3);
        let second = crate::journal::record::SEGMENT_HEADER_LEN + (seg.len() - 28) / 3;
        seg[second + 50] ^= 0x10;
        let d = journal(&[seg], &[]);
        let c = check_journal(d.path(), 512).unwrap();
        assert!(!c.intact());
        assert!(
            c.problems[0].contains(&format!("offset {second}")),
            "{:?}",
            c.problems
        );
        assert_eq!(c.segments[0].entries, 1);
    }

    #[test]
    fn compare_finds_the_differing_extent() {
        let store = crate::storage::MemStore::new(8192, 512); // 4 MiB
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        let mut bytes = vec![0u8; 4 << 20];
        std::fs::write(&img, &bytes).unwrap();
        assert!(compare_image(&store, &img, 1 << 20).unwrap().is_empty());
        bytes[(2 << 20) + 7] = 1;
        std::fs::write(&img, &bytes).unwrap();
        let m = compare_image(&store, &img, 1 << 20).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].offset, m[0].len), (2 << 20, 1 << 20));
        // A short image compares against zeros.
        std::fs::write(&img, [0u8; 1000]).unwrap();
        assert!(compare_image(&store, &img, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn compare_reports_progress_up_to_the_volume_size() {
        let store = crate::storage::MemStore::new(8192, 512); // 4 MiB
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
        let mut seen = Vec::new();
        compare_image_with_progress(&store, &img, 1 << 20, &mut |done, total| {
            seen.push((done, total))
        })
        .unwrap();
        let want: Vec<(u64, u64)> = (1..=4).map(|i| (i << 20, 4 << 20)).collect();
        assert_eq!(seen, want);
    }
}
