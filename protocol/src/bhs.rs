//! The 48-byte Basic Header Segment: stage one of parsing.
