#!/usr/bin/env bash
# CHAP and initiator ACLs with a real client (libiscsi): the right secret logs in, a wrong or
# missing one gets "authentication failure" (0x0201), an initiator not on the target's list gets
# "authorization failure" (0x0202) and does not see the target in SendTargets; secrets never
# reach the log.
set -euo pipefail
# shellcheck source=integration/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
integ_init
INTEG_NAME=security
need_cmd iscsi-inq iscsi-ls
TARGET_IMPL=rewind
rewind_prepare
cfgdir=""; integ_mktemp cfgdir
SECRET="s3cret-for-chap-test"
printf '%s\n' "$SECRET" >"$cfgdir/chap.secret"
chmod 600 "$cfgdir/chap.secret"
cat >"$cfgdir/rewind.toml" <<TOML
[[volume]]
name = "sec"
size = "64MiB"

[[target]]
name = "$REWIND_IQN_PREFIX:sec"
luns = ["sec"]
allowed_initiators = ["iqn.2026-11.dev.rewind.test:good"]
[target.auth]
user = "alice"
secret_file = "$cfgdir/chap.secret"
TOML
REWIND_SERVE_ARGS="--config $cfgdir/rewind.toml" rewind_start
URL_HOST=127.0.0.1:$TARGET_PORT
IQN=$REWIND_IQN_PREFIX:sec
GOOD=iqn.2026-11.dev.rewind.test:good
BAD=iqn.2026-11.dev.rewind.test:bad

out=$(iscsi-inq -i "$GOOD" "iscsi://alice%$SECRET@$URL_HOST/$IQN/0" 2>&1) || fail "login with the right CHAP secret failed: $out"
grep -q "DIRECT_ACCESS" <<<"$out" || fail "no INQUIRY data after CHAP login: $out"
log "  ok: right secret logs in"

out=$(iscsi-inq -i "$GOOD" "iscsi://alice%wrong-secret-123@$URL_HOST/$IQN/0" 2>&1) && fail "a wrong secret logged in"
grep -q "Authentication failure" <<<"$out" || fail "wrong secret: expected authentication failure, got: $out"
log "  ok: wrong secret -> authentication failure"

out=$(iscsi-inq -i "$GOOD" "iscsi://$URL_HOST/$IQN/0" 2>&1) && fail "a login without CHAP got in"
grep -q "Authentication failure" <<<"$out" || fail "no CHAP: expected authentication failure, got: $out"
log "  ok: no CHAP -> authentication failure"

out=$(iscsi-inq -i "$BAD" "iscsi://alice%$SECRET@$URL_HOST/$IQN/0" 2>&1) && fail "an initiator not on the list got in"
grep -q "Authorization failure" <<<"$out" || fail "ACL: expected authorization failure, got: $out"
log "  ok: initiator not on the list -> authorization failure"

# discovery only (no -s: listing LUNs would log in to the target without CHAP credentials)
out=$(iscsi-ls -i "$GOOD" --url "iscsi://$URL_HOST" 2>&1 || true)
grep -q "$IQN" <<<"$out" || fail "allowed initiator does not see the target: $out"
out=$(iscsi-ls -i "$BAD" --url "iscsi://$URL_HOST" 2>&1 || true)
if grep -q "$IQN" <<<"$out"; then fail "SendTargets shows the target to an initiator not on its list: $out"; fi
log "  ok: SendTargets hides the target from initiators not on its list"

chmod 644 "$cfgdir/chap.secret"
rewind_stop
REWIND_SERVE_ARGS="--config $cfgdir/rewind.toml" rewind_start
grep -q "readable by others\|world-readable\|WorldReadable\|others can read" "$TARGET_LOG" || fail "no warning for a world-readable secrets file"
log "  ok: world-readable secrets file draws a warning"
if grep -q -- "$SECRET" "$TARGET_LOG"; then fail "the CHAP secret appears in the log"; fi
log "  ok: the secret never appears in the log"
rewind_stop

# Discovery sessions with CHAP: SendTargets only after authenticating.
chmod 600 "$cfgdir/chap.secret"
cat >>"$cfgdir/rewind.toml" <<TOML

[discovery_auth]
user = "disco"
secret = "discovery-secret-42"
TOML
REWIND_SERVE_ARGS="--config $cfgdir/rewind.toml" rewind_start
URL_HOST=127.0.0.1:$TARGET_PORT
out=$(iscsi-ls -i "$GOOD" --url "iscsi://$URL_HOST" 2>&1 || true)
if grep -q "$IQN" <<<"$out"; then fail "discovery without CHAP listed targets: $out"; fi
grep -qi "authentication failure\|failed" <<<"$out" || fail "discovery without CHAP: expected a login failure, got: $out"
out=$(iscsi-ls -i "$GOOD" --url "iscsi://disco%discovery-secret-42@$URL_HOST" 2>&1 || true)
grep -q "$IQN" <<<"$out" || fail "discovery with the right CHAP secret does not list the target: $out"
log "  ok: discovery CHAP: refused without credentials, lists targets with them"
rewind_stop
pass "CHAP and initiator ACLs with libiscsi"
