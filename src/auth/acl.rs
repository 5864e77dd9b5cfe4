//! Which initiators may use which target.
//!
//! An [`InitiatorAcl`] is one target's list of allowed initiator names. iSCSI names compare
//! case-insensitively (RFC 7143 section 4.2.7.2 has them normalized to lower case), and the
//! entry `*` allows every initiator. A target with no list at all is open to every
//! initiator, so configs written before ACLs existed keep working.
//!
//! An [`AccessPolicy`] holds the lists of all targets: [`AccessPolicy::allows`] is the login
//! check (refuse with 0x0202 Authorization failure), [`AccessPolicy::visible_targets`] the
//! SendTargets filter (a discovery session lists only the targets the initiator may use).

use std::collections::HashMap;

/// The initiators allowed to log in to one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorAcl {
    allow_all: bool,
    /// Allowed names, lower-cased.
    names: Vec<String>,
}

/// The list entry that allows every initiator.
pub const ANY_INITIATOR: &str = "*";

impl InitiatorAcl {
    /// A list that allows every initiator.
    pub fn allow_all() -> InitiatorAcl {
        InitiatorAcl {
            allow_all: true,
            names: Vec::new(),
        }
    }

    /// A list of allowed initiator names; `*` among them allows every initiator. An empty
    /// list allows nobody.
    pub fn new<I, S>(names: I) -> InitiatorAcl
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut acl = InitiatorAcl {
            allow_all: false,
            names: Vec::new(),
        };
        for name in names {
            let name = name.as_ref().trim();
            if name == ANY_INITIATOR {
                acl.allow_all = true;
            } else if !name.is_empty() {
                acl.names.push(normalize(name));
            }
        }
        acl
    }

    /// From a config's `allowed_initiators`: absent means everyone.
    pub fn from_config(allowed: Option<&[String]>) -> InitiatorAcl {
        match allowed {
            None => InitiatorAcl::allow_all(),
            Some(names) => InitiatorAcl::new(names),
        }
    }

    /// True if `*` is on the list (or there was no list).
    pub fn allows_everyone(&self) -> bool {
        self.allow_all
    }

    /// May the initiator named `initiator` (its `InitiatorName`) use this target?
    pub fn allows(&self, initiator: &str) -> bool {
        if self.allow_all {
            return true;
        }
        let initiator = normalize(initiator.trim());
        !initiator.is_empty() && self.names.contains(&initiator)
    }
}

fn normalize(name: &str) -> String {
    name.to_lowercase()
}

/// The initiator lists of every target. Targets it does not know are open to everyone: the
/// login layer decides whether a target exists at all (0x0203 Not found).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Lower-cased target name -> its list.
    targets: HashMap<String, InitiatorAcl>,
}

impl AccessPolicy {
    pub fn new() -> AccessPolicy {
        AccessPolicy::default()
    }

    /// Set the list of `target` (replacing any earlier one).
    pub fn set(&mut self, target: &str, acl: InitiatorAcl) {
        self.targets.insert(normalize(target), acl);
    }

    /// The list of `target`, if it has one.
    pub fn acl(&self, target: &str) -> Option<&InitiatorAcl> {
        self.targets.get(&normalize(target))
    }

    /// May `initiator` log in to `target`? A `false` ends a normal-session login with
    /// 0x0202 Authorization failure.
    pub fn allows(&self, target: &str, initiator: &str) -> bool {
        match self.acl(target) {
            None => true,
            Some(acl) => acl.allows(initiator),
        }
    }

    /// The targets, among `targets`, that a SendTargets answer to `initiator` may list; the
    /// order of `targets` is kept.
    pub fn visible_targets<'a, I>(&self, initiator: &str, targets: I) -> Vec<&'a str>
    where
        I: IntoIterator<Item = &'a str>,
    {
        targets
            .into_iter()
            .filter(|t| self.allows(t, initiator))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_A: &str = "iqn.1994-05.com.redhat:host-a";
    const HOST_B: &str = "iqn.1994-05.com.redhat:host-b";

    #[test]
    fn exact_case_insensitive_match() {
        let acl = InitiatorAcl::new([HOST_A]);
        assert!(acl.allows(HOST_A));
        assert!(acl.allows("IQN.1994-05.COM.REDHAT:HOST-A"));
        assert!(acl.allows(" iqn.1994-05.com.redhat:host-a "));
        assert!(!acl.allows(HOST_B));
        assert!(!acl.allows("iqn.1994-05.com.redhat:host-"));
        assert!(!acl.allows("iqn.1994-05.com.redhat:host-aa"));
        assert!(!acl.allows(""));
        assert!(!acl.allows_everyone());
    }

    #[test]
    fn wildcard_and_empty() {
        let acl = InitiatorAcl::new([HOST_A, "*"]);
        assert!(acl.allows(HOST_B));
        assert!(acl.allows_everyone());
        assert!(InitiatorAcl::allow_all().allows("anything"));
        let nobody = InitiatorAcl::new(Vec::<String>::new());
        assert!(!nobody.allows(HOST_A));
        // Only a whole `*` is a wildcard.
        assert!(!InitiatorAcl::new(["iqn.1994-05.com.redhat:*"]).allows(HOST_A));
        assert!(InitiatorAcl::from_config(None).allows(HOST_A));
        assert!(!InitiatorAcl::from_config(Some(&[HOST_B.to_string()])).allows(HOST_A));
    }

    #[test]
    fn policy_login_check_and_discovery_filter() {
        let mut p = AccessPolicy::new();
        p.set("iqn.2026-11.dev.rewind:db", InitiatorAcl::new([HOST_A]));
        p.set("iqn.2026-11.dev.rewind:web", InitiatorAcl::new([HOST_B]));
        p.set("iqn.2026-11.dev.rewind:shared", InitiatorAcl::new(["*"]));
        assert!(p.allows("iqn.2026-11.dev.rewind:db", HOST_A));
        assert!(p.allows("IQN.2026-11.dev.rewind:DB", HOST_A));
        assert!(!p.allows("iqn.2026-11.dev.rewind:db", HOST_B));
        // No list: open.
        assert!(p.allows("iqn.2026-11.dev.rewind:vol0", HOST_B));

        let all = [
            "iqn.2026-11.dev.rewind:db",
            "iqn.2026-11.dev.rewind:web",
            "iqn.2026-11.dev.rewind:shared",
            "iqn.2026-11.dev.rewind:vol0",
        ];
        assert_eq!(
            p.visible_targets(HOST_A, all),
            vec![
                "iqn.2026-11.dev.rewind:db",
                "iqn.2026-11.dev.rewind:shared",
                "iqn.2026-11.dev.rewind:vol0"
            ]
        );
        assert_eq!(
            p.visible_targets("iqn.2000-01.com.example:stranger", all),
            vec![
                "iqn.2026-11.dev.rewind:shared",
                "iqn.2026-11.dev.rewind:vol0"
            ]
        );
    }
}
