//! A port's partial journal behind its lock, and the batch writes made outside that lock.
//!
//! Every write of a session goes through its port's partial journal, so the lock is held only
//! for in-memory work: the writer whose append fills a batch claims it under the lock and
//! copies it into the segment file without it, while the port's other writers go on
//! appending. The file's other writers (a commit's fsync, a rotation, a failure's status)
//! need everything claimed to be in the file first: they wait until no batch is being
//! written ([`Port::lock_idle`]).

use super::partial::{Batch, PartialJournal};
use super::store::lock;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

pub(crate) struct Port {
    journal: Mutex<PartialJournal>,
    /// Signalled when a batch written outside the lock is done.
    idle: Condvar,
    /// Callers waiting in [`lock_idle`](Self::lock_idle). While there are any, no new batch
    /// is claimed: under a steady stream of writes the next batch would otherwise be out
    /// again before a woken waiter got the lock, and a commit or rotation could wait on and
    /// on. The waiter writes what waits itself, under the lock.
    waiting: AtomicUsize,
}

impl Port {
    pub fn new(journal: PartialJournal) -> Self {
        Port {
            journal: Mutex::new(journal),
            idle: Condvar::new(),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The port's journal (a panic elsewhere leaves it usable: its state is updated in steps
    /// that each keep it consistent).
    pub fn lock(&self) -> MutexGuard<'_, PartialJournal> {
        lock(&self.journal)
    }

    /// The port's journal once no batch is being written outside the lock.
    pub fn lock_idle(&self) -> MutexGuard<'_, PartialJournal> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let journal = self
            .idle
            .wait_while(self.lock(), |j| j.writing())
            .unwrap_or_else(|p| p.into_inner());
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        journal
    }

    /// Claim a batch with `claim`, unless a caller waits for the port to be idle.
    fn claim(&self, claim: impl FnOnce(&mut PartialJournal) -> Option<Batch>) -> Option<Batch> {
        let mut journal = self.lock();
        if self.waiting.load(Ordering::SeqCst) > 0 {
            return None;
        }
        claim(&mut journal)
    }

    /// Write a batch claimed from this port's journal, then record it there.
    pub fn write_batch(&self, mut batch: Batch) -> io::Result<()> {
        let written = batch.write();
        let done = self.lock().finish_batch(batch, written);
        self.idle.notify_all();
        done
    }

    /// Write what waits, outside the lock (the background round). Nothing if a batch is being
    /// written already: its writer leaves the rest to the next round.
    pub fn write_waiting(&self) -> io::Result<()> {
        self.claim_and_write(PartialJournal::claim_batch)
    }

    /// Write a batch once the appends have filled one (the writer whose append did).
    pub fn write_full_batch(&self) -> io::Result<()> {
        self.claim_and_write(PartialJournal::claim_full_batch)
    }

    fn claim_and_write(
        &self,
        claim: impl FnOnce(&mut PartialJournal) -> Option<Batch>,
    ) -> io::Result<()> {
        match self.claim(claim) {
            Some(batch) => self.write_batch(batch),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::partial::{replay_file, WRITE_BATCH};
    use super::super::record::{no_unallocated, Entry, Status};
    use super::*;
    use std::sync::Arc;

    fn entry(lba: u64, byte: u8) -> Entry {
        Entry {
            ts: 0,
            port: 0,
            seq: 0,
            lba,
            blocks: 8,
            chunk_blocks: 8,
            status: Status::Pending,
            unallocated: no_unallocated(1),
            merged: false,
            invalid_ports: vec![],
            data: vec![byte; 4096],
        }
    }

    /// While a claimed batch is out, appends go on and a commit waits for it; what was
    /// appended meanwhile goes with the next batch, after the claimed one.
    #[test]
    fn appends_go_on_while_a_batch_is_written_and_commits_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let port = Arc::new(Port::new(
            PartialJournal::create(dir.path(), 5, 4096, 0).unwrap(),
        ));
        let per_batch = WRITE_BATCH / (4096 + 64) + 1;
        for i in 0..per_batch {
            port.lock().append(100 + i, vec![entry(8 * i, 1)]);
        }
        let mut batch = port.lock().claim_full_batch().expect("a full batch");
        assert!(port.lock().claim_batch().is_none(), "one batch at a time");
        // Appends while the batch is out.
        port.lock().append(10_000, vec![entry(0, 2)]);
        assert!(port.lock().write_pending().is_err(), "not under a batch");
        let committer = {
            let port = port.clone();
            std::thread::spawn(move || port.lock_idle().commit_target().unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!committer.is_finished(), "the commit waits for the batch");
        let written = batch.write();
        port.lock().finish_batch(batch, written).unwrap();
        port.idle.notify_all();
        let (_, upto) = committer.join().unwrap().expect("something to fsync");
        assert_eq!(upto, per_batch + 1, "the commit wrote the later append too");
        let replayed = replay_file(port.lock().path()).unwrap();
        let stamps: Vec<u64> = replayed.entries.iter().map(|e| e.ts).collect();
        let mut want: Vec<u64> = (0..per_batch).map(|i| 100 + i).collect();
        want.push(10_000);
        assert_eq!(stamps, want, "every entry once, in append order");
        assert!(replayed.tail.is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// An append of a write over this many chunks.
        Append(u8),
        /// The outcome `Ok` for the n-th write appended so far (modulo their number).
        Outcome(usize),
        /// Claim a batch (if none is out).
        Claim,
        /// Finish the batch that is out: written, or its write failed.
        Finish { fails: bool },
        /// Write what waits under the lock (only with no batch out, as a commit does).
        WriteIdle,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (1u8..4).prop_map(Op::Append),
            2 => (0usize..64).prop_map(Op::Outcome),
            2 => Just(Op::Claim),
            2 => any::<bool>().prop_map(|b| Op::Finish { fails: b }),
            1 => Just(Op::WriteIdle),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the interleaving of appends, outcomes, batches claimed and finished (some
        /// failing) and writes under the lock, the file ends up holding every entry once, in
        /// append order, and a replay gives each the last outcome recorded for it.
        #[test]
        fn the_file_holds_every_entry_once_in_order(ops in proptest::collection::vec(op(), 1..80)) {
            let dir = tempfile::tempdir().unwrap();
            let port = Port::new(PartialJournal::create(dir.path(), 7, 4096, 0).unwrap());
            let mut out: Option<Batch> = None;
            let mut appended: Vec<(u64, u64)> = Vec::new(); // (ts, seq)
            let mut ok: std::collections::HashSet<u64> = Default::default();
            for op in ops {
                match op {
                    Op::Append(chunks) => {
                        let ts = 1000 + appended.len() as u64;
                        let mut e = entry(8 * appended.len() as u64, chunks);
                        e.blocks = 8 * u32::from(chunks);
                        e.unallocated = no_unallocated(u32::from(chunks));
                        e.data = vec![chunks; 4096 * chunks as usize];
                        let seq = port.lock().append(ts, vec![e]);
                        appended.push((ts, seq));
                    }
                    Op::Outcome(n) if !appended.is_empty() => {
                        let (ts, seq) = appended[n % appended.len()];
                        port.lock().set_status(ts, seq, Status::Ok, 0, 8).unwrap();
                        ok.insert(ts);
                    }
                    Op::Outcome(_) => {}
                    Op::Claim => {
                        let claimed = port.lock().claim_batch();
                        if out.is_some() {
                            proptest::prop_assert!(claimed.is_none(), "a second batch while one is out");
                        } else {
                            out = claimed;
                        }
                    }
                    Op::Finish { fails } => {
                        if let Some(mut b) = out.take() {
                            let written = if fails {
                                Err(io::Error::other("injected"))
                            } else {
                                b.write()
                            };
                            let done = port.lock().finish_batch(b, written);
                            proptest::prop_assert_eq!(done.is_err(), fails);
                        }
                    }
                    Op::WriteIdle => {
                        let r = port.lock().write_pending();
                        proptest::prop_assert_eq!(r.is_err(), out.is_some());
                    }
                }
            }
            if let Some(mut b) = out.take() {
                let written = b.write();
                port.lock().finish_batch(b, written).unwrap();
            }
            let mut j = port.lock_idle();
            j.write_pending().unwrap();
            proptest::prop_assert!(!j.has_pending());
            let replayed = replay_file(j.path()).unwrap();
            proptest::prop_assert!(replayed.tail.is_none());
            let mut last: std::collections::HashMap<u64, Status> = Default::default();
            for e in &replayed.entries {
                last.insert(e.ts, e.status);
            }
            let stamps: Vec<u64> = replayed.entries.iter().map(|e| e.ts).collect();
            let want: Vec<u64> = appended.iter().map(|(ts, _)| *ts).collect();
            proptest::prop_assert_eq!(stamps, want);
            for (ts, _) in &appended {
                let want = if ok.contains(ts) { Status::Ok } else { Status::Pending };
                proptest::prop_assert_eq!(last[ts], want, "entry {}", ts);
            }
            for e in &replayed.entries {
                let chunks = e.chunks() as u8;
                proptest::prop_assert!(e.data.iter().all(|b| *b == chunks), "old data intact");
            }
        }
    }

    /// While a caller waits for the port to be idle, no new batch is claimed: the waiter gets
    /// the file next and writes what waits itself.
    #[test]
    fn a_waiting_commit_holds_off_new_batches() {
        let dir = tempfile::tempdir().unwrap();
        let port = Arc::new(Port::new(
            PartialJournal::create(dir.path(), 5, 4096, 0).unwrap(),
        ));
        port.lock().append(100, vec![entry(0, 1)]);
        let mut batch = port.lock().claim_batch().unwrap();
        let committer = {
            let port = port.clone();
            std::thread::spawn(move || port.lock_idle().commit_target().unwrap())
        };
        while port.waiting.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let per_batch = WRITE_BATCH / (4096 + 64) + 1;
        for i in 0..per_batch {
            port.lock().append(200 + i, vec![entry(8 * i, 2)]);
        }
        let written = batch.write();
        // Between the batch's end and the waiter's turn, a full batch is not claimed.
        let mut journal = port.lock();
        journal.finish_batch(batch, written).unwrap();
        drop(journal);
        port.write_full_batch().unwrap();
        assert!(
            port.lock().has_pending(),
            "no batch claimed while a commit waits"
        );
        port.idle.notify_all();
        let (_, upto) = committer.join().unwrap().expect("something to fsync");
        assert_eq!(upto, per_batch + 1, "the commit wrote every append itself");
        assert!(!port.lock().writing());
    }

    /// A batch whose write fails goes back to wait, before what was appended meanwhile, and
    /// the file is tainted (copied, never adopted whole).
    #[test]
    fn a_failed_batch_waits_again_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let port = Port::new(PartialJournal::create(dir.path(), 5, 4096, 0).unwrap());
        let s1 = port.lock().append(100, vec![entry(0, 1)]);
        let batch = port.lock().claim_batch().unwrap();
        port.lock().set_status(100, s1, Status::Ok, 0, 8).unwrap();
        port.lock().append(200, vec![entry(8, 2)]);
        let failed = port
            .lock()
            .finish_batch(batch, Err(io::Error::other("disk gone")));
        assert!(failed.is_err());
        let mut j = port.lock_idle();
        assert!(j.has_pending());
        j.write_pending().unwrap();
        let replayed = replay_file(j.path()).unwrap();
        let got: Vec<(u64, Status)> = replayed.entries.iter().map(|e| (e.ts, e.status)).collect();
        assert_eq!(got, vec![(100, Status::Ok), (200, Status::Pending)]);
        let rotated = j.rotate().unwrap();
        assert!(
            rotated.adoptable.is_none(),
            "a failed write taints the file"
        );
    }
}
