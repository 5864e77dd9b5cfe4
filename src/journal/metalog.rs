//! The journal's own record of what sled holds besides the index: bookmarks, consistency
//! marks, port validity intervals and the merge's rounding state. sled 0.34 may lose its
//! database after an abrupt kill; the index is rebuilt from the segments, and these from this
//! log, so nothing the journal promised depends on sled alone.
//!
//! `meta.log` in the journal directory: records of `crc32c (4, LE) | length (2, LE) | body`,
//! the body `op (1) | fields`. Appended and fdatasync'ed before the sled tree changes
//! (consistency marks are appended without a sync of their own: a mark lost with the page
//! cache only loses a hint). At open the log is replayed into the sled trees, which it
//! replaces; a torn or damaged tail is cut off at the last good record. When the log holds
//! many more records than the live state, it is rewritten from the state (write, fsync,
//! rename).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::Result;

const BOOKMARK: u8 = 1;
const UNBOOKMARK: u8 = 2;
const MARK: u8 = 3;
const INVALID: u8 = 4;
const VALID: u8 = 5;
const MERGE: u8 = 6;

/// One change to the metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Bookmark {
        ts: u64,
        name: String,
    },
    Unbookmark {
        name: String,
    },
    Mark {
        ts: u64,
    },
    /// Port `port` invalid from `since` (interval open).
    Invalid {
        port: u64,
        since: u64,
    },
    /// The port's open intervals close at `at`.
    Valid {
        port: u64,
        at: u64,
    },
    /// A merge ran at `now` with history kept from `horizon`.
    Merge {
        now: u64,
        horizon: u64,
    },
}

/// The metadata the log describes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct MetaState {
    pub bookmarks: BTreeMap<String, u64>,
    pub marks: BTreeSet<u64>,
    /// (since, port) -> until (`u64::MAX` while open).
    pub validity: BTreeMap<(u64, u64), u64>,
    pub merge: Option<(u64, u64)>,
}

impl MetaState {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Bookmark { ts, name } => {
                self.bookmarks.insert(name.clone(), *ts);
            }
            Op::Unbookmark { name } => {
                self.bookmarks.remove(name);
            }
            Op::Mark { ts } => {
                self.marks.insert(*ts);
            }
            Op::Invalid { port, since } => {
                self.validity.insert((*since, *port), u64::MAX);
            }
            Op::Valid { port, at } => {
                for ((_, p), until) in self.validity.iter_mut() {
                    if p == port && *until == u64::MAX {
                        *until = *at;
                    }
                }
            }
            Op::Merge { now, horizon } => {
                self.merge = Some((*now, *horizon));
                // History before the horizon is gone, and its marks with it.
                self.marks = self.marks.split_off(horizon);
            }
        }
    }

    /// The ops that rebuild this state.
    fn ops(&self) -> Vec<Op> {
        let mut out = Vec::new();
        for (name, ts) in &self.bookmarks {
            out.push(Op::Bookmark {
                ts: *ts,
                name: name.clone(),
            });
        }
        out.extend(self.marks.iter().map(|&ts| Op::Mark { ts }));
        for (&(since, port), &until) in &self.validity {
            out.push(Op::Invalid { port, since });
            if until != u64::MAX {
                out.push(Op::Valid { port, at: until });
            }
        }
        if let Some((now, horizon)) = self.merge {
            out.push(Op::Merge { now, horizon });
        }
        out
    }

    fn live(&self) -> usize {
        self.bookmarks.len() + self.marks.len() + 2 * self.validity.len() + 1
    }
}

fn encode(op: &Op, out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(32);
    match op {
        Op::Bookmark { ts, name } => {
            body.push(BOOKMARK);
            body.extend_from_slice(&ts.to_le_bytes());
            body.extend_from_slice(name.as_bytes());
        }
        Op::Unbookmark { name } => {
            body.push(UNBOOKMARK);
            body.extend_from_slice(name.as_bytes());
        }
        Op::Mark { ts } => {
            body.push(MARK);
            body.extend_from_slice(&ts.to_le_bytes());
        }
        Op::Invalid { port, since } => {
            body.push(INVALID);
            body.extend_from_slice(&port.to_le_bytes());
            body.extend_from_slice(&since.to_le_bytes());
        }
        Op::Valid { port, at } => {
            body.push(VALID);
            body.extend_from_slice(&port.to_le_bytes());
            body.extend_from_slice(&at.to_le_bytes());
        }
        Op::Merge { now, horizon } => {
            body.push(MERGE);
            body.extend_from_slice(&now.to_le_bytes());
            body.extend_from_slice(&horizon.to_le_bytes());
        }
    }
    // Bookmark names are short (a volume-name-like string); a longer one is cut, never
    // written with a lying length.
    body.truncate(u16::MAX as usize);
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn decode_body(b: &[u8]) -> Option<Op> {
    let name = |from: usize| String::from_utf8(b.get(from..)?.to_vec()).ok();
    Some(match *b.first()? {
        BOOKMARK => Op::Bookmark {
            ts: u64_at(b, 1)?,
            name: name(9)?,
        },
        UNBOOKMARK => Op::Unbookmark { name: name(1)? },
        MARK => Op::Mark { ts: u64_at(b, 1)? },
        INVALID => Op::Invalid {
            port: u64_at(b, 1)?,
            since: u64_at(b, 9)?,
        },
        VALID => Op::Valid {
            port: u64_at(b, 1)?,
            at: u64_at(b, 9)?,
        },
        MERGE => Op::Merge {
            now: u64_at(b, 1)?,
            horizon: u64_at(b, 9)?,
        },
        _ => return None,
    })
}

/// Every whole, good record of `buf`, and where the good part ends.
fn decode_all(buf: &[u8]) -> (Vec<Op>, usize) {
    let mut ops = Vec::new();
    let mut at = 0;
    while let Some(head) = buf.get(at..at + 6) {
        let crc = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let len = usize::from(u16::from_le_bytes([head[4], head[5]]));
        let Some(body) = buf.get(at + 6..at + 6 + len) else {
            break;
        };
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Some(op) = decode_body(body) else { break };
        ops.push(op);
        at += 6 + len;
    }
    (ops, at)
}

pub(crate) struct MetaLog {
    path: PathBuf,
    file: Mutex<File>,
}

/// What opening the log found.
pub(crate) struct Opened {
    pub log: MetaLog,
    pub state: MetaState,
    /// The log did not exist: the state is empty and the caller should `seed` it.
    pub created: bool,
    /// Bytes of a damaged or torn tail that were cut off.
    pub cut: u64,
}

impl MetaLog {
    pub fn open(dir: &Path) -> Result<Opened> {
        let path = dir.join("meta.log");
        let (buf, created) = match std::fs::read(&path) {
            Ok(b) => (b, false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), true),
            Err(e) => return Err(e.into()),
        };
        let (ops, good) = decode_all(&buf);
        let mut state = MetaState::default();
        for op in &ops {
            state.apply(op);
        }
        let cut = (buf.len() - good) as u64;
        if cut > 0 {
            tracing::warn!(
                "{}: {cut} bytes after the last good record cut off (torn or damaged tail)",
                path.display()
            );
        }
        let log = MetaLog {
            file: Mutex::new(File::open(dir)?),
            path,
        };
        if created || cut > 0 || ops.len() > 2 * state.live() + 1024 {
            log.rewrite(&state)?;
        } else {
            *log.file.lock().unwrap_or_else(|p| p.into_inner()) =
                OpenOptions::new().append(true).open(&log.path)?;
        }
        Ok(Opened {
            log,
            state,
            created,
            cut,
        })
    }

    /// Replace the log with the records of `state`.
    pub fn rewrite(&self, state: &MetaState) -> Result<()> {
        let mut buf = Vec::new();
        for op in state.ops() {
            encode(&op, &mut buf);
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, &buf)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            super::partial::sync_dir(dir)?;
        }
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) =
            OpenOptions::new().append(true).open(&self.path)?;
        Ok(())
    }

    /// Append `op`; with `sync`, durable when this returns.
    pub fn append(&self, op: &Op, sync: bool) -> Result<()> {
        let mut buf = Vec::with_capacity(48);
        encode(op, &mut buf);
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&buf)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<u64>(), "[a-z0-9.-]{1,20}").prop_map(|(ts, name)| Op::Bookmark { ts, name }),
            "[a-z0-9.-]{1,20}".prop_map(|name| Op::Unbookmark { name }),
            any::<u64>().prop_map(|ts| Op::Mark { ts }),
            (any::<u64>(), any::<u64>()).prop_map(|(port, since)| Op::Invalid { port, since }),
            (any::<u64>(), any::<u64>()).prop_map(|(port, at)| Op::Valid { port, at }),
            (any::<u64>(), any::<u64>()).prop_map(|(now, horizon)| Op::Merge { now, horizon }),
        ]
    }

    proptest! {
        /// Records read back as written; a cut anywhere loses only the records after it.
        #[test]
        fn records_round_trip_and_a_torn_tail_keeps_the_rest(
            ops in proptest::collection::vec(arb_op(), 0..20),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut buf = Vec::new();
            let mut ends = vec![0];
            for op in &ops {
                encode(op, &mut buf);
                ends.push(buf.len());
            }
            prop_assert_eq!(decode_all(&buf), (ops.clone(), buf.len()));
            let at = cut.index(buf.len() + 1);
            let whole = ends.iter().filter(|&&e| e <= at).count() - 1;
            let (got, good) = decode_all(&buf[..at]);
            prop_assert_eq!(&got[..], &ops[..whole]);
            prop_assert_eq!(good, ends[whole]);
        }
    }

    #[test]
    fn state_survives_reopen_rewrite_and_a_flipped_bit() {
        let dir = tempfile::tempdir().unwrap();
        let o = MetaLog::open(dir.path()).unwrap();
        assert!(o.created);
        let ops = [
            Op::Bookmark {
                ts: 10,
                name: "a".into(),
            },
            Op::Bookmark {
                ts: 20,
                name: "b".into(),
            },
            Op::Unbookmark { name: "a".into() },
            Op::Mark { ts: 5 },
            Op::Mark { ts: 30 },
            Op::Invalid { port: 7, since: 25 },
            Op::Merge {
                now: 40,
                horizon: 10,
            },
            Op::Valid { port: 7, at: 35 },
        ];
        for op in &ops {
            o.log.append(op, true).unwrap();
        }
        drop(o);
        let o = MetaLog::open(dir.path()).unwrap();
        assert!(!o.created);
        assert_eq!(o.state.bookmarks, BTreeMap::from([("b".to_string(), 20)]));
        assert_eq!(
            o.state.marks,
            BTreeSet::from([30]),
            "marks before the horizon go"
        );
        assert_eq!(o.state.validity, BTreeMap::from([((25, 7), 35)]));
        assert_eq!(o.state.merge, Some((40, 10)));
        let before = o.state.clone();
        o.log.rewrite(&o.state).unwrap();
        o.log.append(&Op::Mark { ts: 50 }, false).unwrap();
        drop(o);
        // A flipped bit in the last record: it is cut off, the rest stays.
        let path = dir.path().join("meta.log");
        let mut b = std::fs::read(&path).unwrap();
        let n = b.len();
        b[n - 1] ^= 1;
        std::fs::write(&path, b).unwrap();
        let o = MetaLog::open(dir.path()).unwrap();
        assert!(o.cut > 0);
        assert_eq!(o.state, before);
    }
}
