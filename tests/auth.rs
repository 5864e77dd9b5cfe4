//! CHAP and initiator ACLs through the login stage machine over a real socket (libiscsi in
//! `integration/security.sh` only speaks one-way MD5): every algorithm logs in, the strongest
//! one offered is chosen whatever the initiator's order, mutual CHAP proves the target's
//! secret, wrong secrets and missing CHAP end in 0x0201, an initiator not on the target's list
//! gets 0x0202 and does not see the target in SendTargets, and discovery CHAP guards
//! SendTargets.

mod common;

use common::{start_server_with, Client, Server, INITIATOR, TARGET};
use rewind::auth::chap::ChapInitiator;
use rewind::auth::{ChapAlgorithm, Secret};
use rewind::config::{ChapAuthConfig, TargetConfig, VolumeConfig};
use rewind_protocol::text::parse_pairs;
use rewind_protocol::LoginResponse;

const SEC: &str = "iqn.2026-11.dev.rewind:sec";
const USER: &str = "alice";
const SECRET: &str = "one-way-secret-123";
const TARGET_USER: &str = "rewind-sec";
const TARGET_SECRET: &str = "mutual-secret-456";
const GOOD: &str = "iqn.2026-11.dev.rewind.test:good";

fn chap_config(mutual: bool) -> ChapAuthConfig {
    ChapAuthConfig {
        user: Some(USER.into()),
        secret: Some(Secret::new(SECRET)),
        mutual_user: mutual.then(|| TARGET_USER.into()),
        mutual_secret: mutual.then(|| Secret::new(TARGET_SECRET)),
        ..ChapAuthConfig::default()
    }
}

/// A daemon with the default target (no CHAP, no list) and `SEC`, which needs CHAP.
async fn server(
    mutual: bool,
    allowed: Option<Vec<String>>,
    discovery: Option<ChapAuthConfig>,
) -> Server {
    start_server_with(move |c| {
        for name in ["vol0", "sec"] {
            c.volumes.push(VolumeConfig {
                name: name.into(),
                path: None,
                size: Some("16MiB".into()),
                block_size: 512,
                read_only: false,
                journal: None,
            });
        }
        c.targets.push(TargetConfig {
            name: SEC.into(),
            alias: None,
            luns: vec!["sec".into()],
            allowed_initiators: allowed,
            auth: Some(chap_config(mutual)),
        });
        c.discovery_auth = discovery;
    })
    .await
}

fn keys(r: &LoginResponse) -> Vec<(String, String)> {
    parse_pairs(&r.data).expect("login answer parses")
}

fn value<'a>(keys: &'a [(String, String)], key: &str) -> Option<&'a str> {
    keys.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn status(r: &LoginResponse) -> (u8, u8) {
    (r.status_class, r.status_detail)
}

/// The security stage with CHAP, the way open-iscsi does it: AuthMethod first, then CHAP_A,
/// then CHAP_N/CHAP_R (and CHAP_I/CHAP_C for mutual CHAP) with the transit to the operational
/// stage. Returns the last response: a failure, or the one that ends the security stage.
async fn chap_security(
    c: &mut Client,
    initiator: &str,
    target: Option<&str>,
    offer: &str,
    who: &mut ChapInitiator,
) -> LoginResponse {
    let mut first = vec![("InitiatorName", initiator), ("AuthMethod", "CHAP,None")];
    match target {
        Some(t) => first.extend([("SessionType", "Normal"), ("TargetName", t)]),
        None => first.push(("SessionType", "Discovery")),
    }
    let r = c.login_step(0, 1, false, &first).await;
    if r.status_class != 0 {
        return r;
    }
    assert_eq!(value(&keys(&r), "AuthMethod"), Some("CHAP"));
    let r = c.login_step(0, 1, false, &[("CHAP_A", offer)]).await;
    if r.status_class != 0 {
        return r;
    }
    let answer = who
        .respond(&keys(&r))
        .expect("the target's challenge is well formed");
    let answer: Vec<(&str, &str)> = answer
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    c.login_step(0, 1, true, &answer).await
}

/// The operational stage, into full feature phase.
async fn operational(c: &mut Client) -> LoginResponse {
    let r = c
        .login_step(1, 3, true, &[("MaxRecvDataSegmentLength", "262144")])
        .await;
    if r.status_class == 0 {
        c.tsih = r.tsih;
    }
    r
}

/// A discovery session for `initiator` without CHAP; SendTargets' target names.
async fn discover(s: &Server, initiator: &str) -> Result<Vec<String>, (u8, u8)> {
    let mut c = Client::connect(s.addr).await;
    let r = c
        .login_step(
            0,
            1,
            true,
            &[
                ("InitiatorName", initiator),
                ("SessionType", "Discovery"),
                ("AuthMethod", "None"),
            ],
        )
        .await;
    if r.status_class != 0 {
        return Err(status(&r));
    }
    assert_eq!(status(&operational(&mut c).await), (0, 0));
    Ok(names(c.send_targets().await))
}

fn names(pairs: Vec<(String, String)>) -> Vec<String> {
    pairs
        .into_iter()
        .filter(|(k, _)| k == "TargetName")
        .map(|(_, v)| v)
        .collect()
}

fn one_way() -> ChapInitiator {
    ChapInitiator::new(USER, Secret::new(SECRET))
}

#[tokio::test]
async fn every_algorithm_logs_in_and_the_strongest_offered_is_chosen() {
    let s = server(false, None, None).await;
    for alg in ChapAlgorithm::ALL {
        let mut c = Client::connect(s.addr).await;
        let code = alg.code().to_string();
        let r = chap_security(&mut c, INITIATOR, Some(SEC), &code, &mut one_way()).await;
        assert_eq!(status(&r), (0, 0), "CHAP with {}", alg.name());
        assert!(r.transit && r.nsg == 1, "on to the operational stage");
        assert_eq!(status(&operational(&mut c).await), (0, 0));
        assert_eq!(c.read10(0, 8, 512).await.status, 0, "{}", alg.name());
    }
    // MD5 first in the list, as an initiator may order it: SHA3-256 is still chosen, with a
    // challenge as long as its digest.
    let mut c = Client::connect(s.addr).await;
    let first = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", SEC),
        ("AuthMethod", "CHAP"),
    ];
    assert_eq!(status(&c.login_step(0, 1, false, &first).await), (0, 0));
    let r = c.login_step(0, 1, false, &[("CHAP_A", "5,6,7,8")]).await;
    assert_eq!(status(&r), (0, 0));
    let k = keys(&r);
    assert_eq!(value(&k, "CHAP_A"), Some("8"));
    let challenge = value(&k, "CHAP_C").expect("CHAP_C");
    assert_eq!(challenge.len(), 2 + 2 * 32, "{challenge}");
    // No algorithm in common: CHAP_A=Reject and authentication failure.
    let mut c = Client::connect(s.addr).await;
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "1,2,99", &mut one_way()).await;
    assert_eq!(status(&r), (2, 1));
    assert_eq!(value(&keys(&r), "CHAP_A"), Some("Reject"));
}

#[tokio::test]
async fn mutual_chap_proves_the_target() {
    let s = server(true, None, None).await;
    let mut c = Client::connect(s.addr).await;
    let mut who = one_way().with_mutual(TARGET_USER, Secret::new(TARGET_SECRET));
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "7,8", &mut who).await;
    assert_eq!(status(&r), (0, 0));
    let k = keys(&r);
    assert_eq!(value(&k, "CHAP_N"), Some(TARGET_USER));
    who.verify_target(&k)
        .expect("the target's mutual response checks out");
    assert_eq!(status(&operational(&mut c).await), (0, 0));
    assert_eq!(c.read10(0, 1, 512).await.status, 0);

    // An initiator expecting another target secret refuses the target's answer.
    let mut c = Client::connect(s.addr).await;
    let mut who = one_way().with_mutual(TARGET_USER, Secret::new("not-the-target-secret"));
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "8", &mut who).await;
    assert_eq!(status(&r), (0, 0));
    assert!(who.verify_target(&keys(&r)).is_err());

    // A target without mutual credentials refuses an initiator that asks for them.
    let s = server(false, None, None).await;
    let mut c = Client::connect(s.addr).await;
    let mut who = one_way().with_mutual(TARGET_USER, Secret::new(TARGET_SECRET));
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "8", &mut who).await;
    assert_eq!(status(&r), (2, 1));
}

#[tokio::test]
async fn wrong_secrets_and_missing_chap_are_authentication_failures() {
    let s = server(true, None, None).await;
    let mut c = Client::connect(s.addr).await;
    let mut who = ChapInitiator::new(USER, Secret::new("wrong-secret-789"));
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "8", &mut who).await;
    assert_eq!(status(&r), (2, 1), "wrong secret");
    assert!(c.closed_within(std::time::Duration::from_secs(5)).await);

    let mut c = Client::connect(s.addr).await;
    let mut who = ChapInitiator::new("mallory", Secret::new(SECRET));
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "8", &mut who).await;
    assert_eq!(status(&r), (2, 1), "wrong CHAP name");

    // AuthMethod=None only, and an attempt to skip the security stage.
    let mut c = Client::connect(s.addr).await;
    let r = c.login(Some(SEC), &[]).await;
    assert_eq!(status(&r), (2, 1), "no CHAP offered");
    let mut c = Client::connect(s.addr).await;
    let first = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", SEC),
        ("AuthMethod", "CHAP"),
    ];
    let r = c.login_step(0, 1, true, &first).await;
    assert_eq!(status(&r), (0, 0));
    assert!(!r.transit, "no transit before CHAP is done");
    // A login that starts in the operational stage skips security: refused.
    let mut c = Client::connect(s.addr).await;
    let first = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", SEC),
    ];
    let r = c.login_step(1, 3, true, &first).await;
    assert_eq!(status(&r), (2, 1), "security stage skipped");

    // The target without CHAP still logs in with AuthMethod=None.
    let mut c = Client::connect(s.addr).await;
    assert_eq!(status(&c.login(Some(TARGET), &[]).await), (0, 0));
}

#[tokio::test]
async fn initiators_not_on_the_list_are_refused_and_do_not_see_the_target() {
    let s = server(false, Some(vec![GOOD.into()]), None).await;
    // Refused before CHAP, even with the right secret.
    let mut c = Client::connect(s.addr).await;
    let r = chap_security(&mut c, INITIATOR, Some(SEC), "8", &mut one_way()).await;
    assert_eq!(status(&r), (2, 2), "authorization failure");
    assert!(
        keys(&r).iter().all(|(k, _)| !k.starts_with("CHAP_")),
        "no challenge for an initiator that may not log in"
    );
    let mut c = Client::connect(s.addr).await;
    let r = chap_security(&mut c, GOOD, Some(SEC), "8", &mut one_way()).await;
    assert_eq!(status(&r), (0, 0), "the listed initiator logs in");
    // A target that does not exist.
    let mut c = Client::connect(s.addr).await;
    let r = chap_security(
        &mut c,
        GOOD,
        Some("iqn.2026-11.dev.rewind:nope"),
        "8",
        &mut one_way(),
    )
    .await;
    assert_eq!(status(&r), (2, 3), "not found");

    let seen = discover(&s, INITIATOR).await.expect("discovery");
    assert!(seen.iter().any(|t| t == TARGET), "{seen:?}");
    assert!(!seen.iter().any(|t| t == SEC), "hidden: {seen:?}");
    let seen = discover(&s, GOOD).await.expect("discovery");
    assert!(seen.iter().any(|t| t == SEC), "{seen:?}");
}

#[tokio::test]
async fn discovery_chap_guards_send_targets() {
    let s = server(false, None, Some(chap_config(false))).await;
    assert_eq!(discover(&s, INITIATOR).await, Err((2, 1)));
    let mut c = Client::connect(s.addr).await;
    let mut who = ChapInitiator::new(USER, Secret::new("wrong-secret-789"));
    let r = chap_security(&mut c, INITIATOR, None, "8", &mut who).await;
    assert_eq!(status(&r), (2, 1));
    let mut c = Client::connect(s.addr).await;
    let r = chap_security(&mut c, INITIATOR, None, "6,8", &mut one_way()).await;
    assert_eq!(status(&r), (0, 0));
    assert_eq!(status(&operational(&mut c).await), (0, 0));
    let seen = names(c.send_targets().await);
    assert!(seen.iter().any(|t| t == SEC), "{seen:?}");
}
