//! Arbitrary bytes through the text key parser and the continuation accumulator.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rewind_protocol::text::{encode_pairs, parse_pairs, split_segments, TextAccumulator};

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = parse_pairs(data) {
        // What parses re-encodes into something that parses the same.
        let enc = encode_pairs(&pairs);
        assert_eq!(parse_pairs(&enc).ok().as_ref(), Some(&pairs));
    }

    // Use the first byte as the segment size, the rest as the text.
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let text = Bytes::copy_from_slice(rest);
    let pieces = split_segments(text.clone(), usize::from(size));
    let n = pieces.len();
    let mut acc = TextAccumulator::new(4096);
    for (i, piece) in pieces.into_iter().enumerate() {
        let cont = i + 1 < n;
        match acc.push(piece, cont) {
            Ok(Some(all)) => {
                assert!(!cont);
                assert_eq!(all, text);
                let _ = parse_pairs(&all);
            }
            Ok(None) => assert!(cont),
            Err(_) => {
                assert!(text.len() > 4096);
                break;
            }
        }
    }
});
