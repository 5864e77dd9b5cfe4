//! Text key negotiation (RFC 7143 section 13), free of I/O.
//!
//! Each key the initiator offers gets exactly one answer: the negotiated result for
//! list/boolean/numeric keys, our own value for declarative keys that call for one, or
//! `NotUnderstood` / `Irrelevant` / `Reject`. Results are written into [`SessionParams`] and
//! [`ConnParams`] as they are agreed.

use crate::config::IscsiConfig;

/// Session-wide operational parameters, with their RFC 7143 defaults until negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub max_connections: u32,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u32,
    pub default_time2retain: u32,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u32,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Per-connection parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnParams {
    pub header_digest: bool,
    pub data_digest: bool,
    /// The initiator's MaxRecvDataSegmentLength: the most we may put in one PDU we send.
    pub initiator_max_recv: u32,
    /// Ours: the most the initiator may put in one PDU.
    pub target_max_recv: u32,
}

impl Default for ConnParams {
    fn default() -> Self {
        ConnParams {
            header_digest: false,
            data_digest: false,
            initiator_max_recv: 8192,
            target_max_recv: 8192,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Normal,
    Discovery,
}

/// What the initiator declared about itself during login.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    pub initiator_name: Option<String>,
    pub initiator_alias: Option<String>,
    pub target_name: Option<String>,
    pub session_type: Option<String>,
}

/// A login-time failure to negotiate, mapped to a login status by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("key {0} is not allowed after the first login request")]
    DeclaredTooLate(&'static str),
    #[error("key {key} has an invalid value {value:?}")]
    InvalidValue { key: String, value: String },
}

pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
pub const IRRELEVANT: &str = "Irrelevant";
pub const REJECT: &str = "Reject";

/// Negotiation state of one login (or one Text exchange).
#[derive(Debug, Clone)]
pub struct Negotiator {
    offer: IscsiConfig,
    pub session: SessionParams,
    pub conn: ConnParams,
    pub declared: Declared,
    /// Whether our MaxRecvDataSegmentLength has been declared to the initiator yet.
    declared_mrdsl: bool,
    /// Keys already answered (a key negotiated twice is answered Reject).
    answered: Vec<String>,
}

/// A decimal or `0x` hex constant; `None` when the value is not a number at all. A number too
/// wide for 64 bits is still a number (saturated): it is out of every key's range, not malformed.
fn parse_number(v: &str) -> Option<u64> {
    let (digits, radix) = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (v, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    // Only overflow is left to fail once every digit is known good.
    Some(u64::from_str_radix(digits, radix).unwrap_or(u64::MAX))
}

/// The valid range of each numerical key this target negotiates (RFC 7143 section 13).
fn numeric_range(key: &str) -> Option<(u32, u32)> {
    match key {
        "MaxConnections" | "MaxOutstandingR2T" => Some((1, 65_535)),
        "MaxBurstLength" | "FirstBurstLength" => Some((512, 16_777_215)),
        "DefaultTime2Wait" | "DefaultTime2Retain" => Some((0, 3600)),
        "ErrorRecoveryLevel" => Some((0, 2)),
        "iSCSIProtocolLevel" => Some((0, 31)),
        _ => None,
    }
}

/// Keys with no meaning in a discovery session, where only SendTargets text and a logout follow
/// the login: RFC 7143 section 13 marks each of them "Irrelevant when: SessionType=Discovery"
/// (13.2, 13.10, 13.11, 13.13, 13.14, 13.17, 13.18, 13.19). DefaultTime2Wait,
/// DefaultTime2Retain and ErrorRecoveryLevel carry no such line and are negotiated in either
/// session type.
fn irrelevant_in_discovery(key: &str) -> bool {
    matches!(
        key,
        "MaxConnections"
            | "InitialR2T"
            | "ImmediateData"
            | "MaxBurstLength"
            | "FirstBurstLength"
            | "MaxOutstandingR2T"
            | "DataPDUInOrder"
            | "DataSequenceInOrder"
    )
}

/// The pass in which a key of one text is answered. SessionType comes first: in a discovery
/// session most operational keys are irrelevant, and the initiator may declare the type after
/// them in the same text. FirstBurstLength comes last: whether it is relevant depends on
/// InitialR2T and ImmediateData, and its value may not exceed MaxBurstLength, any of which may
/// come after it.
fn answer_pass(key: &str) -> u8 {
    match key {
        "SessionType" => 0,
        "FirstBurstLength" => 2,
        _ => 1,
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(b: bool) -> String {
    if b { "Yes" } else { "No" }.to_string()
}

/// The outcome of one key: the answer to send, if any.
type Answer = Option<String>;

impl Negotiator {
    pub fn new(offer: IscsiConfig) -> Negotiator {
        let conn = ConnParams {
            target_max_recv: offer.max_recv_data_segment_length,
            ..ConnParams::default()
        };
        Negotiator {
            offer,
            session: SessionParams::default(),
            conn,
            declared: Declared::default(),
            declared_mrdsl: false,
            answered: Vec::new(),
        }
    }

    pub fn session_type(&self) -> SessionType {
        match self.declared.session_type.as_deref() {
            Some("Discovery") => SessionType::Discovery,
            _ => SessionType::Normal,
        }
    }

    /// Answer the keys of one (complete) text segment. `first` is true for the first login
    /// request of the connection, where the initiator declares its name and the session type.
    /// `operational` says whether operational keys may be negotiated now (not in the security
    /// stage after authentication started, per RFC 7143 6.2; we accept them in either stage).
    pub fn process(
        &mut self,
        pairs: &[(String, String)],
        first: bool,
    ) -> Result<Vec<(String, String)>, NegotiationError> {
        // Answered in passes (see `answer_pass`); answers keep the order of the offers.
        let mut answers: Vec<Answer> = vec![None; pairs.len()];
        for pass in 0..=2 {
            for ((key, value), answer) in pairs.iter().zip(answers.iter_mut()) {
                if answer_pass(key) == pass {
                    *answer = self.one(key, value, first)?;
                }
            }
        }
        Ok(pairs
            .iter()
            .zip(answers)
            .filter_map(|((key, _), answer)| answer.map(|a| (key.clone(), a)))
            .collect())
    }

    /// FirstBurstLength is irrelevant when InitialR2T=Yes and ImmediateData=No (RFC 7143 13.14).
    /// Only outcomes already negotiated count, not defaults: the initiator may still offer
    /// InitialR2T or ImmediateData later in the login, and a number answered for a key that
    /// turns out irrelevant is harmless, while `Irrelevant` for one that turns out relevant
    /// would leave FirstBurstLength unnegotiated.
    fn first_burst_irrelevant(&self) -> bool {
        let negotiated = |key: &str| self.answered.iter().any(|k| k == key);
        negotiated("InitialR2T")
            && negotiated("ImmediateData")
            && self.session.initial_r2t
            && !self.session.immediate_data
    }

    /// Settle the results that depend on each other, once the login's keys are all answered.
    ///
    /// FirstBurstLength is answered no higher than MaxBurstLength stands at that moment, so it
    /// can only end up above it when MaxBurstLength is negotiated in a later request, lower
    /// than it stood (its default, 262144, until then). The answer already sent cannot be
    /// taken back: a key is negotiated once per login (RFC 7143 6.2). What is kept is lowered
    /// to MaxBurstLength, as RFC 7143 13.14 requires of both sides ("FirstBurstLength MUST NOT
    /// exceed MaxBurstLength"): an initiator that applies the rule sends no more unsolicited
    /// data than that, and one that does not has the excess refused rather than accepted past
    /// the session's burst limit.
    pub fn finish(&mut self) {
        let s = &mut self.session;
        s.first_burst_length = s.first_burst_length.min(s.max_burst_length);
    }

    /// Our MaxRecvDataSegmentLength, declared once per connection in the operational stage.
    pub fn declare_mrdsl(&mut self, out: &mut Vec<(String, String)>) {
        if !self.declared_mrdsl {
            self.declared_mrdsl = true;
            if !out.iter().any(|(k, _)| k == "MaxRecvDataSegmentLength") {
                out.push((
                    "MaxRecvDataSegmentLength".into(),
                    self.conn.target_max_recv.to_string(),
                ));
            }
        }
    }

    fn once(&mut self, key: &str) -> bool {
        if self.answered.iter().any(|k| k == key) {
            return false;
        }
        self.answered.push(key.to_string());
        true
    }

    fn one(&mut self, key: &str, value: &str, first: bool) -> Result<Answer, NegotiationError> {
        let invalid = || NegotiationError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
        };
        // Declarations by the initiator: no answer.
        match key {
            "InitiatorName" | "TargetName" | "SessionType" => {
                if !first {
                    // Allowed only on the first request; repeating the same value is harmless.
                    let same = match key {
                        "InitiatorName" => self.declared.initiator_name.as_deref() == Some(value),
                        "TargetName" => self.declared.target_name.as_deref() == Some(value),
                        _ => self.declared.session_type.as_deref() == Some(value),
                    };
                    if same {
                        return Ok(None);
                    }
                    return Err(NegotiationError::DeclaredTooLate(match key {
                        "InitiatorName" => "InitiatorName",
                        "TargetName" => "TargetName",
                        _ => "SessionType",
                    }));
                }
                match key {
                    "InitiatorName" => self.declared.initiator_name = Some(value.to_string()),
                    "TargetName" => self.declared.target_name = Some(value.to_string()),
                    _ => {
                        if value != "Normal" && value != "Discovery" {
                            return Err(invalid());
                        }
                        self.declared.session_type = Some(value.to_string())
                    }
                }
                return Ok(None);
            }
            "InitiatorAlias" => {
                self.declared.initiator_alias = Some(value.to_string());
                return Ok(None);
            }
            // CHAP keys belong to the authentication exchange (crate::auth).
            k if k.starts_with("CHAP_") => return Ok(None),
            // Keys only a target may send, and answers to offers we never made.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => {
                return Ok(Some(IRRELEVANT.into()))
            }
            _ => {}
        }
        if matches!(value, NOT_UNDERSTOOD | IRRELEVANT | REJECT) {
            return Ok(None);
        }
        if !self.once(key) {
            return Ok(Some(REJECT.into()));
        }
        // Not looked at, not recorded: the session keeps the key's default.
        if self.session_type() == SessionType::Discovery && irrelevant_in_discovery(key) {
            return Ok(Some(IRRELEVANT.into()));
        }
        if key == "FirstBurstLength" && self.first_burst_irrelevant() {
            return Ok(Some(IRRELEVANT.into()));
        }
        // A number outside the key's range is not admissible: answered Reject, which leaves the
        // key at its current (or default) value (RFC 7143 6.2, 6.2.2). A value that is not a
        // number at all does not follow the key's syntax and fails the login.
        let n = match numeric_range(key) {
            Some((min, max)) => {
                let v = parse_number(value).ok_or_else(invalid)?;
                if !(u64::from(min)..=u64::from(max)).contains(&v) {
                    return Ok(Some(REJECT.into()));
                }
                u32::try_from(v).unwrap_or(max)
            }
            // Not a numerical key: `n` is unused.
            None => 0,
        };
        let o = &self.offer;
        let s = &mut self.session;
        let answer = match key {
            "HeaderDigest" | "DataDigest" => {
                let choice = value
                    .split(',')
                    .map(str::trim)
                    .find(|v| *v == "None" || *v == "CRC32C");
                match choice {
                    Some(c) => {
                        let on = c == "CRC32C";
                        if key == "HeaderDigest" {
                            self.conn.header_digest = on;
                        } else {
                            self.conn.data_digest = on;
                        }
                        c.to_string()
                    }
                    None => REJECT.into(),
                }
            }
            "MaxRecvDataSegmentLength" => {
                // A declaration, not a negotiation: nothing to answer Reject to. Below the
                // key's least value (512) we could not honour it, so the login fails rather
                // than sending larger PDUs than the initiator takes; above its greatest we
                // send no more than that anyway.
                let v = parse_number(value)
                    .filter(|v| *v >= 512)
                    .ok_or_else(invalid)?;
                self.conn.initiator_max_recv =
                    u32::try_from(v.min(16_777_215)).unwrap_or(16_777_215);
                self.declared_mrdsl = true;
                self.conn.target_max_recv.to_string()
            }
            "MaxConnections" => {
                s.max_connections = n.min(o.max_connections);
                s.max_connections.to_string()
            }
            "InitialR2T" => {
                // OR: Yes if either side wants it. We do not require it.
                s.initial_r2t = parse_bool(value).ok_or_else(invalid)?;
                yes_no(s.initial_r2t)
            }
            "ImmediateData" => {
                // AND: we support immediate data.
                s.immediate_data = parse_bool(value).ok_or_else(invalid)?;
                yes_no(s.immediate_data)
            }
            "MaxBurstLength" => {
                s.max_burst_length = n.min(o.max_burst_length);
                s.max_burst_length.to_string()
            }
            "FirstBurstLength" => {
                // The minimum of both offers, and no more than MaxBurstLength (RFC 7143 13.14):
                // as negotiated in this text (answered before this key) or an earlier one, or
                // its default while it has not been. See `finish` for one negotiated later.
                s.first_burst_length = n.min(o.first_burst_length).min(s.max_burst_length);
                s.first_burst_length.to_string()
            }
            "DefaultTime2Wait" => {
                s.default_time2wait = n.max(2);
                s.default_time2wait.to_string()
            }
            "DefaultTime2Retain" => {
                // Minimum of both; we keep no state for reconnection (ErrorRecoveryLevel 0).
                s.default_time2retain = 0;
                s.default_time2retain.to_string()
            }
            "MaxOutstandingR2T" => {
                s.max_outstanding_r2t = n.min(o.max_outstanding_r2t);
                s.max_outstanding_r2t.to_string()
            }
            "DataPDUInOrder" => {
                parse_bool(value).ok_or_else(invalid)?;
                s.data_pdu_in_order = true;
                yes_no(true)
            }
            "DataSequenceInOrder" => {
                parse_bool(value).ok_or_else(invalid)?;
                s.data_sequence_in_order = true;
                yes_no(true)
            }
            "ErrorRecoveryLevel" => {
                s.error_recovery_level = 0;
                "0".into()
            }
            "IFMarker" | "OFMarker" => {
                parse_bool(value).ok_or_else(invalid)?;
                "No".into()
            }
            "IFMarkInt" | "OFMarkInt" => IRRELEVANT.into(),
            "AuthMethod" => {
                // Authentication is decided by the login stage machine; here only None is known.
                if value.split(',').any(|v| v.trim() == "None") {
                    "None".into()
                } else {
                    REJECT.into()
                }
            }
            "iSCSIProtocolLevel" => n.min(1).to_string(),
            "TaskReporting" => {
                if value.split(',').any(|v| v.trim() == "RFC3720") {
                    "RFC3720".into()
                } else {
                    REJECT.into()
                }
            }
            "SendTargets" => IRRELEVANT.into(),
            _ => NOT_UNDERSTOOD.into(),
        };
        Ok(Some(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn answer<'a>(out: &'a [(String, String)], key: &str) -> Option<&'a str> {
        out.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn open_iscsi_defaults_negotiate_to_what_it_expects() {
        let mut n = Negotiator::new(IscsiConfig::default());
        let first = kv(&[
            ("InitiatorName", "iqn.1993-08.org.debian:01:abc"),
            ("SessionType", "Normal"),
            ("TargetName", "iqn.2026-11.dev.rewind:vol0"),
        ]);
        assert!(n.process(&first, true).expect("declarations").is_empty());
        let ops = kv(&[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("DefaultTime2Wait", "2"),
            ("DefaultTime2Retain", "0"),
            ("IFMarker", "No"),
            ("OFMarker", "No"),
            ("ErrorRecoveryLevel", "0"),
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "262144"),
            ("MaxOutstandingR2T", "1"),
            ("MaxConnections", "1"),
            ("DataPDUInOrder", "Yes"),
            ("DataSequenceInOrder", "Yes"),
            ("MaxRecvDataSegmentLength", "262144"),
        ]);
        let out = n.process(&ops, false).expect("negotiates");
        assert_eq!(answer(&out, "MaxBurstLength"), Some("16776192"));
        assert_eq!(answer(&out, "FirstBurstLength"), Some("262144"));
        assert_eq!(answer(&out, "MaxConnections"), Some("1"));
        assert_eq!(answer(&out, "ErrorRecoveryLevel"), Some("0"));
        assert_eq!(answer(&out, "InitialR2T"), Some("No"));
        assert_eq!(answer(&out, "ImmediateData"), Some("Yes"));
        assert_eq!(answer(&out, "MaxRecvDataSegmentLength"), Some("262144"));
        assert_eq!(n.conn.initiator_max_recv, 262_144);
        assert_eq!(n.session.first_burst_length, 262_144);
        assert!(!n.session.initial_r2t);
        // Every offered key got exactly one answer.
        assert_eq!(out.len(), ops.len());
    }

    #[test]
    fn digests_pick_first_supported_offer() {
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = n
            .process(
                &kv(&[
                    ("HeaderDigest", "CRC32C,None"),
                    ("DataDigest", "None,CRC32C"),
                ]),
                false,
            )
            .expect("ok");
        assert_eq!(answer(&out, "HeaderDigest"), Some("CRC32C"));
        assert_eq!(answer(&out, "DataDigest"), Some("None"));
        assert!(n.conn.header_digest && !n.conn.data_digest);
        let out = n
            .process(&kv(&[("X-com.example.Foo", "1")]), false)
            .expect("ok");
        assert_eq!(answer(&out, "X-com.example.Foo"), Some(NOT_UNDERSTOOD));
    }

    #[test]
    fn numeric_results_follow_min_and_max_rules() {
        let cfg = IscsiConfig {
            max_burst_length: 65536,
            first_burst_length: 65536,
            ..IscsiConfig::default()
        };
        let mut n = Negotiator::new(cfg);
        let out = n
            .process(
                &kv(&[
                    ("MaxBurstLength", "262144"),
                    ("FirstBurstLength", "262144"),
                    ("DefaultTime2Wait", "0"),
                ]),
                false,
            )
            .expect("ok");
        assert_eq!(answer(&out, "MaxBurstLength"), Some("65536"));
        assert_eq!(answer(&out, "FirstBurstLength"), Some("65536"));
        assert_eq!(answer(&out, "DefaultTime2Wait"), Some("2"));
        assert!(
            n.process(&kv(&[("MaxBurstLength", "12")]), false).is_ok(),
            "repeat answers Reject, not an error"
        );
        let mut n = Negotiator::new(IscsiConfig::default());
        assert!(n.process(&kv(&[("InitialR2T", "Maybe")]), false).is_err());
    }

    #[test]
    fn out_of_range_numbers_are_rejected_and_keep_the_default() {
        let offers = [
            ("MaxConnections", "0"),
            ("MaxBurstLength", "12"),
            ("FirstBurstLength", "0x1000000"),
            ("DefaultTime2Wait", "3601"),
            ("DefaultTime2Retain", "99999999999999999999999"),
            ("MaxOutstandingR2T", "65536"),
            ("ErrorRecoveryLevel", "3"),
            ("iSCSIProtocolLevel", "32"),
        ];
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = n.process(&kv(&offers), false).expect("not a login failure");
        for (key, _) in offers {
            assert_eq!(answer(&out, key), Some(REJECT), "{key}");
        }
        assert_eq!(out.len(), offers.len());
        assert_eq!(
            n.session,
            SessionParams::default(),
            "every key keeps its default"
        );
        // The rest of the text is still negotiated, and a rejected key is not offered again.
        let out = n
            .process(
                &kv(&[("MaxBurstLength", "65536"), ("MaxConnections", "1")]),
                false,
            )
            .expect("ok");
        assert_eq!(answer(&out, "MaxBurstLength"), Some(REJECT));
        assert_eq!(answer(&out, "MaxConnections"), Some(REJECT));
        assert_eq!(n.session.max_burst_length, 262_144);
    }

    /// Offering `key=value` alone fails the negotiation as an invalid value of that key.
    fn assert_fails_as_invalid(key: &str, value: &str) {
        let mut n = Negotiator::new(IscsiConfig::default());
        let err = n.process(&kv(&[(key, value)]), false).expect_err(value);
        assert_eq!(
            err,
            NegotiationError::InvalidValue {
                key: key.into(),
                value: value.into()
            }
        );
    }

    /// The initiator's MaxRecvDataSegmentLength below 512 cannot be honoured: the login
    /// fails (there is no Reject for a declaration); above the key's range it is capped.
    #[test]
    fn a_too_small_max_recv_data_segment_length_fails_the_login() {
        for value in ["511", "0", "0x1ff"] {
            assert_fails_as_invalid("MaxRecvDataSegmentLength", value);
        }
        for (value, got) in [("512", 512), ("99999999999", 16_777_215)] {
            let mut n = Negotiator::new(IscsiConfig::default());
            n.process(&kv(&[("MaxRecvDataSegmentLength", value)]), false)
                .expect(value);
            assert_eq!(n.conn.initiator_max_recv, got, "{value}");
        }
    }

    #[test]
    fn numbers_that_are_not_numbers_fail_the_negotiation() {
        for value in ["", "abc", "12k", "-1", "1.5", "0x", "0xg1", " 512"] {
            assert_fails_as_invalid("MaxBurstLength", value);
        }
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = n
            .process(&kv(&[("MaxBurstLength", "0x10000")]), false)
            .expect("hex is a number");
        assert_eq!(answer(&out, "MaxBurstLength"), Some("65536"));
    }

    #[test]
    fn first_burst_length_is_irrelevant_without_unsolicited_data() {
        let no_unsolicited = [("InitialR2T", "Yes"), ("ImmediateData", "No")];
        // Offered before the keys that make it irrelevant, in the same text: the answers keep
        // the order of the offers.
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = n
            .process(
                &kv(&[
                    ("FirstBurstLength", "262144"),
                    no_unsolicited[0],
                    no_unsolicited[1],
                ]),
                false,
            )
            .expect("ok");
        assert_eq!(
            out,
            kv(&[
                ("FirstBurstLength", IRRELEVANT),
                ("InitialR2T", "Yes"),
                ("ImmediateData", "No"),
            ])
        );
        assert_eq!(n.session.first_burst_length, 65_536, "left at its default");
        // Settled in an earlier request.
        let mut n = Negotiator::new(IscsiConfig::default());
        n.process(&kv(&no_unsolicited), false).expect("ok");
        let out = n
            .process(&kv(&[("FirstBurstLength", "262144")]), false)
            .expect("ok");
        assert_eq!(answer(&out, "FirstBurstLength"), Some(IRRELEVANT));
        // Irrelevant even with a value out of range: it is not looked at.
        let mut n = Negotiator::new(IscsiConfig::default());
        let mut offers = no_unsolicited.to_vec();
        offers.push(("FirstBurstLength", "1"));
        let out = n.process(&kv(&offers), false).expect("ok");
        assert_eq!(answer(&out, "FirstBurstLength"), Some(IRRELEVANT));
        // Relevant whenever unsolicited data is possible.
        for (r2t, imm) in [("No", "No"), ("Yes", "Yes"), ("No", "Yes")] {
            let mut n = Negotiator::new(IscsiConfig::default());
            let out = n
                .process(
                    &kv(&[
                        ("InitialR2T", r2t),
                        ("ImmediateData", imm),
                        ("FirstBurstLength", "4096"),
                    ]),
                    false,
                )
                .expect("ok");
            assert_eq!(
                answer(&out, "FirstBurstLength"),
                Some("4096"),
                "{r2t} {imm}"
            );
        }
        // InitialR2T not offered yet: its default (Yes) could still change in a later request,
        // so the length is negotiated.
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = n
            .process(
                &kv(&[("ImmediateData", "No"), ("FirstBurstLength", "4096")]),
                false,
            )
            .expect("ok");
        assert_eq!(answer(&out, "FirstBurstLength"), Some("4096"));
        assert_eq!(n.session.first_burst_length, 4096);
    }

    /// The operational keys libiscsi offers, in this order, in discovery and normal sessions.
    const LIBISCSI_OPS: [(&str, &str); 16] = [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "262144"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("ErrorRecoveryLevel", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("MaxConnections", "1"),
        ("MaxRecvDataSegmentLength", "262144"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
    ];

    #[test]
    fn discovery_answers_irrelevant_to_keys_irrelevant_in_discovery() {
        let mut n = Negotiator::new(IscsiConfig::default());
        let first = kv(&[
            ("InitiatorName", "iqn.2002-10.com.ronnie:client"),
            ("SessionType", "Discovery"),
        ]);
        assert!(n.process(&first, true).expect("declarations").is_empty());
        let out = n.process(&kv(&LIBISCSI_OPS), false).expect("negotiates");
        // Every offer answered once, in the order offered; those without "Irrelevant when:
        // SessionType=Discovery" in RFC 7143 section 13 are negotiated as in a normal session.
        assert_eq!(
            out,
            kv(&[
                ("HeaderDigest", "None"),
                ("DataDigest", "None"),
                ("InitialR2T", IRRELEVANT),
                ("ImmediateData", IRRELEVANT),
                ("MaxBurstLength", IRRELEVANT),
                ("FirstBurstLength", IRRELEVANT),
                ("DefaultTime2Wait", "2"),
                ("DefaultTime2Retain", "0"),
                ("MaxOutstandingR2T", IRRELEVANT),
                ("ErrorRecoveryLevel", "0"),
                ("IFMarker", "No"),
                ("OFMarker", "No"),
                ("MaxConnections", IRRELEVANT),
                ("MaxRecvDataSegmentLength", "262144"),
                ("DataPDUInOrder", IRRELEVANT),
                ("DataSequenceInOrder", IRRELEVANT),
            ])
        );
        assert_eq!(n.conn.initiator_max_recv, 262_144);
        // Nothing irrelevant was recorded: InitialR2T=No and ImmediateData=Yes were not taken.
        n.finish();
        assert_eq!(
            n.session,
            SessionParams {
                default_time2retain: 0,
                ..SessionParams::default()
            }
        );
    }

    /// SessionType may come after the keys it makes irrelevant, in the same (first) text.
    #[test]
    fn discovery_declared_after_the_keys_it_makes_irrelevant() {
        let mut n = Negotiator::new(IscsiConfig::default());
        let mut offers = vec![("InitiatorName", "iqn.a:b")];
        offers.extend(LIBISCSI_OPS);
        offers.push(("SessionType", "Discovery"));
        let out = n.process(&kv(&offers), true).expect("negotiates");
        assert_eq!(out.len(), LIBISCSI_OPS.len(), "declarations get no answer");
        for (key, _) in LIBISCSI_OPS {
            let got = answer(&out, key).expect(key);
            assert_eq!(
                got == IRRELEVANT,
                irrelevant_in_discovery(key),
                "{key}={got}"
            );
        }
        assert_eq!(n.session_type(), SessionType::Discovery);
        assert_eq!(n.session.max_burst_length, 262_144);
        assert!(n.session.initial_r2t, "left at its default");
        // Not looked at, so not a reason to fail the login either.
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = n
            .process(
                &kv(&[
                    ("MaxBurstLength", "12"),
                    ("InitialR2T", "Maybe"),
                    ("SessionType", "Discovery"),
                ]),
                true,
            )
            .expect("irrelevant values are not looked at");
        assert_eq!(
            out,
            kv(&[("MaxBurstLength", IRRELEVANT), ("InitialR2T", IRRELEVANT)])
        );
        // The same keys in a normal session, declared last, are negotiated.
        let mut n = Negotiator::new(IscsiConfig::default());
        let mut offers = LIBISCSI_OPS.to_vec();
        offers.push(("SessionType", "Normal"));
        let out = n.process(&kv(&offers), true).expect("negotiates");
        assert!(out.iter().all(|(_, v)| v != IRRELEVANT), "{out:?}");
        assert!(!n.session.initial_r2t);
    }

    #[test]
    fn first_burst_length_never_exceeds_max_burst_length() {
        let offer = |n: &mut Negotiator, offers: &[(&str, &str)]| {
            n.process(&kv(offers), false).expect("negotiates")
        };
        // In the same text, in either order.
        for offers in [
            [("MaxBurstLength", "65536"), ("FirstBurstLength", "262144")],
            [("FirstBurstLength", "262144"), ("MaxBurstLength", "65536")],
        ] {
            let mut n = Negotiator::new(IscsiConfig::default());
            let out = offer(&mut n, &offers);
            assert_eq!(answer(&out, "MaxBurstLength"), Some("65536"), "{offers:?}");
            assert_eq!(
                answer(&out, "FirstBurstLength"),
                Some("65536"),
                "{offers:?}"
            );
            assert_eq!(
                out[0].0, offers[0].0,
                "answers keep the order of the offers"
            );
            assert_eq!(n.session.first_burst_length, 65_536);
        }
        // Our own offer makes MaxBurstLength the smaller (even with a configuration that does
        // not keep FirstBurstLength within it).
        let cfg = IscsiConfig {
            max_burst_length: 65_536,
            first_burst_length: 262_144,
            ..IscsiConfig::default()
        };
        let mut n = Negotiator::new(cfg);
        let out = offer(
            &mut n,
            &[
                ("FirstBurstLength", "16776192"),
                ("MaxBurstLength", "16776192"),
            ],
        );
        assert_eq!(answer(&out, "MaxBurstLength"), Some("65536"));
        assert_eq!(answer(&out, "FirstBurstLength"), Some("65536"));
        // MaxBurstLength never offered: it stays at its default, and so bounds FirstBurstLength.
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = offer(&mut n, &[("FirstBurstLength", "1048576")]);
        assert_eq!(answer(&out, "FirstBurstLength"), Some("262144"));
        // Negotiated in an earlier request.
        let mut n = Negotiator::new(IscsiConfig::default());
        offer(&mut n, &[("MaxBurstLength", "65536")]);
        let out = offer(&mut n, &[("FirstBurstLength", "262144")]);
        assert_eq!(answer(&out, "FirstBurstLength"), Some("65536"));
        // Negotiated in a later request, below what FirstBurstLength was answered: that answer
        // stands, and the session keeps MaxBurstLength as its first burst.
        let mut n = Negotiator::new(IscsiConfig::default());
        let out = offer(&mut n, &[("FirstBurstLength", "262144")]);
        assert_eq!(answer(&out, "FirstBurstLength"), Some("262144"));
        let out = offer(&mut n, &[("MaxBurstLength", "65536")]);
        assert_eq!(answer(&out, "MaxBurstLength"), Some("65536"));
        n.finish();
        assert_eq!(n.session.max_burst_length, 65_536);
        assert_eq!(n.session.first_burst_length, 65_536);
    }

    #[test]
    fn declarations_only_on_first_request() {
        let mut n = Negotiator::new(IscsiConfig::default());
        n.process(&kv(&[("InitiatorName", "iqn.a:b")]), true)
            .expect("ok");
        n.process(&kv(&[("InitiatorName", "iqn.a:b")]), false)
            .expect("same value repeated is fine");
        assert!(n
            .process(&kv(&[("InitiatorName", "iqn.c:d")]), false)
            .is_err());
        let mut n = Negotiator::new(IscsiConfig::default());
        n.process(&kv(&[("SessionType", "Discovery")]), true)
            .expect("ok");
        assert_eq!(n.session_type(), SessionType::Discovery);
    }
}
