//! Human and JSON output of the CLI.

use std::io::IsTerminal;

use rewind::admin::Status;
use rewind::datadir::VolumeMeta;
use rewind::volume::{format_stamp, ViewInfo};

fn json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub fn volumes(list: &[VolumeMeta], as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&list);
    }
    outln!(
        "{:<20} {:>16} {:>6} {:<3} {:<4}",
        "NAME",
        "SIZE",
        "BLOCK",
        "RO",
        "CDP"
    );
    for v in list {
        let yn = |b: bool| if b { "yes" } else { "no" };
        outln!(
            "{:<20} {:>16} {:>6} {:<3} {:<4}",
            v.name,
            v.size,
            v.block_size,
            yn(v.read_only),
            yn(v.journal)
        );
    }
    Ok(())
}

pub fn status(value: serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&value);
    }
    let s: Status = serde_json::from_value(value)?;
    outln!("rewind {} listening on {}", s.version, s.portals.join(", "));
    outln!("\nTARGETS");
    for t in &s.targets {
        outln!("  {}  luns {:?}", t.name, t.luns);
    }
    outln!("\nSESSIONS ({})", s.sessions.len());
    for x in &s.sessions {
        outln!(
            "  tsih {:<5} {} isid {} -> {}  connections {} tasks {}",
            x.tsih,
            x.initiator,
            x.isid,
            x.target.as_deref().unwrap_or("(discovery)"),
            x.connections,
            x.tasks
        );
    }
    outln!("\nVOLUMES");
    for v in &s.volumes {
        let ro = if v.read_only { "  read-only" } else { "" };
        outln!(
            "  {:<20} {:>16} bytes  {}-byte blocks{ro}",
            v.name,
            v.size,
            v.block_size
        );
    }
    if !s.journals.is_empty() {
        outln!("\nJOURNALS (CDP; `rewind history VOLUME` has the details)");
        for j in &s.journals {
            outln!(
                "  {:<20} oldest point {}  {}  flush lag {:.1}s  merge lag {:.0}s",
                j.volume,
                j.oldest,
                bytesize::ByteSize(j.journal_bytes).to_string_as(true),
                j.flush_lag_seconds,
                j.merge_lag_seconds
            );
            if !j.invalid_ports.is_empty() {
                outln!(
                    "  WARNING: {} port(s) of {} could not flush their journal; points since are not guaranteed complete",
                    j.invalid_ports.len(),
                    j.volume
                );
            }
        }
    }
    let io = &s.io;
    outln!(
        "\nI/O since start: {} reads ({}), {} writes ({}), {} other commands",
        io.commands_read,
        bytesize::ByteSize(io.bytes_read).to_string_as(true),
        io.commands_write,
        bytesize::ByteSize(io.bytes_written).to_string_as(true),
        io.commands_other
    );
    Ok(())
}

pub fn history(v: serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&v);
    }
    let text = |k: &str| v[k].as_str().unwrap_or("none").to_string();
    outln!("volume            {}", text("volume"));
    outln!("oldest point      {}", text("oldest"));
    outln!("history began     {}", text("history_begins"));
    outln!("newest point      {}", text("newest"));
    outln!(
        "indexed entries   {} (entries still in partial journals are indexed at their next flush)",
        v["entries"]
    );
    outln!(
        "consistency marks {} (last {})",
        v["consistency_marks"],
        text("last_consistency_mark")
    );
    let invalid = v["invalid_ports"].as_array().map_or(0, Vec::len);
    if invalid > 0 {
        outln!("WARNING: {invalid} port(s) could not flush their journal; later points are not guaranteed complete");
    }
    for w in v["incomplete_merged_windows"]
        .as_array()
        .into_iter()
        .flatten()
    {
        outln!(
            "WARNING: merged window {} .. {}: port(s) {} invalid; points from there on are not guaranteed complete",
            w["from"].as_str().unwrap_or_default(),
            w["to"].as_str().unwrap_or_default(),
            w["invalid_ports"]
        );
    }
    let failed = v["failed_write_count"].as_u64().unwrap_or(0);
    if failed > 0 {
        outln!("failed writes     {failed} (journaled, then answered with an error; see --json)");
    }
    let bytes = v["journal_bytes"].as_u64().unwrap_or(0);
    outln!(
        "journal size      {} ({bytes} bytes)",
        bytesize::ByteSize(bytes).to_string_as(true)
    );
    let sizes = v["sizes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if sizes.len() > 1 {
        outln!("sizes (views of a time have the size of that time)");
        for z in sizes {
            outln!(
                "  {:>16} bytes from {}",
                z["bytes"],
                z["from"].as_str().unwrap_or_default()
            );
        }
    }
    outln!("retention");
    for t in v["retention_tiers"].as_array().into_iter().flatten() {
        outln!(
            "  {:<28} {} .. {}",
            t["keeps"].as_str().unwrap_or_default(),
            t["from"].as_str().unwrap_or_default(),
            t["to"].as_str().unwrap_or_default()
        );
    }
    outln!("bookmarks");
    for b in v["bookmarks"].as_array().into_iter().flatten() {
        outln!(
            "  {:<24} {}",
            b["name"].as_str().unwrap_or_default(),
            b["time"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub fn snapshot(v: serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&v);
    }
    let info: ViewInfo = serde_json::from_value(v)?;
    let mode = if info.writable {
        "writable overlay, discarded at unexport"
    } else {
        "read-only"
    };
    outln!(
        "exported {} as it was at {} ({mode}, LUN 0)",
        info.volume,
        format_stamp(info.point)
    );
    if info.point != info.requested {
        outln!(
            "note: merged history rounds {} to {}",
            format_stamp(info.requested),
            format_stamp(info.point)
        );
    }
    if !info.invalid_ports.is_empty() {
        outln!(
            "WARNING: {} port(s) had journal failures before this point; it may be incomplete",
            info.invalid_ports.len()
        );
    }
    outln!("{}", info.target);
    Ok(())
}

pub fn snapshots(v: serde_json::Value, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return json(&v);
    }
    let views: Vec<ViewInfo> = serde_json::from_value(v)?;
    outln!("{:<64} {:<12} {:<28} MODE", "TARGET", "VOLUME", "POINT");
    for x in views {
        let mode = if x.writable { "writable" } else { "read-only" };
        outln!(
            "{:<64} {:<12} {:<28} {mode}",
            x.target,
            x.volume,
            format_stamp(x.point)
        );
    }
    Ok(())
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub fn new(label: &str) -> Progress {
        let bar = indicatif::ProgressBar::new(0);
        if !std::io::stderr().is_terminal() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {percent:>3}% eta {eta}")
        {
            bar.set_style(style.progress_chars("#>."));
        }
        bar.set_message(label.to_string());
        Progress { bar }
    }

    pub fn update(&mut self, done: u64, total: u64) {
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    pub fn finish(&mut self) {
        self.bar.finish_and_clear();
    }
}
