#!/usr/bin/env bash
# Starts a working demo: a private Dovecot on loopback with a test user, and imapgate in
# front of it. Everything lives in a temporary directory that is removed on exit; nothing
# on the machine is reconfigured. Stop it with Ctrl-C.
#
#   contrib/demo.sh                 # imapgate on 127.0.0.1:1143, Dovecot on 127.0.0.1:11143
#   IMAPGATE_PORT=2143 DOVECOT_PORT=12143 contrib/demo.sh
set -euo pipefail

gate_port=${IMAPGATE_PORT:-1143}
dovecot_port=${DOVECOT_PORT:-11143}
top=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v dovecot >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "demo: dovecot is not installed; run: sudo apt-get install dovecot-imapd" >&2
        exit 1
    fi
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dovecot-imapd
fi

(cd "$top" && cargo build --release --quiet)
gate="$top/target/release/imapgate"

dir=$(mktemp -d "${TMPDIR:-/tmp}/imapgate-demo.XXXXXX")
chmod 755 "$dir"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

if [ "$(id -u)" -eq 0 ]; then
    login_user=dovenull internal_user=dovecot mail_owner=dovecot
else
    login_user=$(id -un) internal_user=$(id -un) mail_owner=$(id -un)
fi
mkdir -p "$dir/run" "$dir/mail"
chown "$mail_owner" "$dir/mail"
# Two demo users; the password of both is "demo".
printf 'demo:{PLAIN}demo\nalice:{PLAIN}demo\n' > "$dir/users"

cat > "$dir/dovecot.conf" <<CONF
base_dir = $dir/run
state_dir = $dir/run
instance_name = imapgate-demo-$$
listen = 127.0.0.1
protocols = imap
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
log_path = $dir/dovecot.log
default_internal_user = $internal_user
default_login_user = $login_user
first_valid_uid = 1
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = $dir/users
}
userdb {
  driver = static
  args = uid=$mail_owner gid=$(id -gn "$mail_owner") home=$dir/mail/%u
}
service imap-login {
  inet_listener imap {
    port = $dovecot_port
  }
  inet_listener imaps {
    port = 0
  }
}
CONF

cat > "$dir/imapgate.ini" <<CONF
[backend dovecot]
host = 127.0.0.1
port = $dovecot_port

[map users]
type = static
default = dovecot

[listener imap]
listen = 127.0.0.1:$gate_port
map = users
CONF

# Waits (at most 5 s) until something listens on 127.0.0.1:$1.
listening() {
    for _ in $(seq 50); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "demo: nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# Dovecot first: imapgate probes its backends at start and would report it down.
dovecot -F -c "$dir/dovecot.conf" & pids+=($!)
listening "$dovecot_port"
"$gate" -f "$dir/imapgate.ini" & pids+=($!)
listening "$gate_port"

cat <<TXT

imapgate is listening on 127.0.0.1:$gate_port in front of Dovecot on 127.0.0.1:$dovecot_port.
Users: demo and alice, password "demo". Try:

  curl --user demo:demo imap://127.0.0.1:$gate_port/ -X 'LIST "" "*"'
  curl --user demo:demo imap://127.0.0.1:$gate_port/INBOX -X 'EXAMINE INBOX'
  python3 -c 'import imaplib; m = imaplib.IMAP4("127.0.0.1", $gate_port); print(m.login("demo", "demo")); print(m.select())'

imapgate logs each session below. Press Ctrl-C to stop.

TXT
wait -n "${pids[@]}"
