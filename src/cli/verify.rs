//! `rewind verify`: journal integrity, and a past point compared with an image.

use std::path::PathBuf;

use clap::Args;
use rewind::admin;
use rewind::config::{parse_size, Config};
use rewind::datadir::DataDir;

use super::print::Progress;

#[derive(Args)]
pub struct VerifyArgs {
    pub volume: String,
    /// Point to compare: RFC 3339 time, an age such as 5m, or µs since the epoch.
    #[arg(long, conflicts_with = "bookmark", requires = "image")]
    pub at: Option<String>,
    /// Point to compare: a bookmark's name.
    #[arg(long, requires = "image")]
    pub bookmark: Option<String>,
    /// Raw image to compare the volume at --at/--bookmark with.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Extent size for the comparison (sha256 per extent).
    #[arg(long, default_value = "1MiB")]
    pub extent: String,
    /// The daemon's config file, for its journal settings (chunk size).
    #[arg(long, env = "REWIND_CONFIG")]
    pub config: Option<PathBuf>,
}

/// `rewind verify`: 0 intact (and equal), 1 corruption or mismatch, 2 usage / cannot run.
pub fn run(data: &std::path::Path, args: &VerifyArgs) -> i32 {
    use rewind::verify;
    let usage = |m: String| {
        eprintln!("error: {m}");
        2
    };
    if admin::call(data, &admin::Request::Status).is_ok() {
        return usage(format!(
            "a rewind daemon is serving {}; stop it first (verify reads the journal offline)",
            data.display()
        ));
    }
    if args.image.is_some() && args.at.is_none() && args.bookmark.is_none() {
        return usage("--image needs --at or --bookmark".into());
    }
    let dd = match DataDir::open(data) {
        Ok(d) => d,
        Err(e) => return usage(e.to_string()),
    };
    let meta = match dd.load(&args.volume) {
        Ok(m) => m,
        Err(e) => return usage(e.to_string()),
    };
    let jdir = verify::journal_dir(&dd, &meta);
    if !jdir.exists() {
        return usage(format!("volume {} has no journal", meta.name));
    }
    // A bar on stderr while it runs (only on a terminal): stdout stays as scripts read it.
    let mut bar = Progress::new(&format!("checking the journal of {}", meta.name));
    let checked =
        verify::check_journal_with_progress(&jdir, meta.block_size, &mut |d, t| bar.update(d, t));
    bar.finish();
    let check = match checked {
        Ok(c) => c,
        Err(e) => return usage(format!("reading {}: {e}", jdir.display())),
    };
    let entries: u64 = check.segments.iter().map(|s| s.entries).sum();
    outln!(
        "journal of {}: {} segment file(s), {} entries",
        meta.name,
        check.segments.len(),
        entries
    );
    let failed: std::collections::BTreeSet<_> = check
        .segments
        .iter()
        .flat_map(|s| s.failed.iter())
        .collect();
    if !failed.is_empty() {
        outln!(
            "  {} write(s) recorded Failed (the initiator got an error after their old data was journaled)",
            failed.len()
        );
    }
    for s in check.torn_tails() {
        if let Some((off, why)) = &s.tail {
            outln!(
                "  torn tail (left by a crash; recovery cuts it): {} at offset {off} of {}: {why}",
                s.file.display(),
                s.len
            );
        }
    }
    let mut code = 0;
    if check.intact() {
        outln!("journal intact");
    } else {
        for p in &check.problems {
            outln!("CORRUPT: {p}");
        }
        code = 1;
    }
    let Some(image) = &args.image else {
        return code;
    };
    let point = match (&args.at, &args.bookmark) {
        (Some(t), _) => match t.parse::<u64>() {
            Ok(us) => verify::Point::At(us),
            Err(_) => match rewind::volume::parse_point(t, rewind::volume::now_micros()) {
                Ok(us) => verify::Point::At(us),
                Err(e) => return usage(e),
            },
        },
        (None, Some(b)) => verify::Point::Bookmark(b.clone()),
        (None, None) => return usage("--image needs --at or --bookmark".into()),
    };
    let extent = match parse_size(&args.extent) {
        Ok(n) if n >= 512 => n,
        _ => return usage(format!("bad --extent {:?}", args.extent)),
    };
    let journal_cfg = match &args.config {
        Some(p) => match Config::load(p) {
            Ok(c) => c.journal,
            Err(e) => return usage(format!("{e:#}")),
        },
        None => rewind::journal::JournalConfig::default(),
    };
    let mut bar = Progress::new(&format!("comparing {} with {}", meta.name, image.display()));
    let compared = verify::compare_point_with_progress(
        &dd,
        &meta,
        &journal_cfg,
        &point,
        image,
        extent,
        &mut |d, t| bar.update(d, t),
    );
    bar.finish();
    match compared {
        Ok(c) => {
            if !c.invalid_ports.is_empty() {
                outln!(
                    "WARNING: {} port(s) had journal failures around this point",
                    c.invalid_ports.len()
                );
            }
            if c.mismatches.is_empty() {
                outln!(
                    "view at {} equals {}",
                    rewind::volume::format_stamp(c.point),
                    image.display()
                );
            } else {
                for m in &c.mismatches {
                    outln!(
                        "MISMATCH extent {}+{}: view sha256 {} image sha256 {}",
                        m.offset,
                        m.len,
                        m.view_sha256,
                        m.image_sha256
                    );
                }
                outln!(
                    "view at {} differs from {} in {} extent(s)",
                    rewind::volume::format_stamp(c.point),
                    image.display(),
                    c.mismatches.len()
                );
                code = 1;
            }
            code
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}
