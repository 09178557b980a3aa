#!/bin/sh
# Install (or upgrade) dedupd as a systemd service, from this checkout, as root.
#
#   systemd/install.sh --root DIR [--root DIR]... --quarantine DIR [--group GROUP]...
#   systemd/install.sh --instance NAME --root DIR ... --quarantine DIR   # dedupd@NAME
#   systemd/install.sh [--instance NAME]                                 # after editing the config
#
# docs/service.md explains every step; tests/test_boot.py runs this script in a
# freshly booted minimal Debian 12. It needs nothing beyond a minimal Debian or
# Ubuntu image (systemd, /bin/sh, coreutils, passwd) and apt-get for python3-venv
# when that is missing. pip's own settings (PIP_INDEX_URL, PIP_FIND_LINKS,
# PIP_NO_INDEX, /etc/pip.conf) apply to the install into the venv.
#
# 1. Python 3.11+ with venv; the venv /opt/dedupd with this checkout in it;
#    /usr/local/bin/dedupd linked to its command.
# 2. The system user dedupd (systemd-sysusers), added to each --group.
# 3. The units, into /etc/systemd/system.
# 4. The config /etc/dedupd/config.yaml (NAME.yaml for an instance): written from
#    --root and --quarantine if there is none (quarantine exact copies, log the
#    rest), else kept and checked (exit 78 if invalid).
# 5. The quarantine directory, if missing: owned by dedupd, mode 0750.
# 6. A drop-in, /etc/systemd/system/UNIT.d/10-paths.conf, made from the config:
#    ReadWritePaths= for the roots and the quarantine (when an action moves
#    files), the store and the audit log if they are outside the state directory,
#    RequiresMountsFor= for all of them, and ProtectHome=read-only for a path
#    under /home. Run the script again after changing those keys.
# 7. systemctl daemon-reload, enable and (re)start: returns once the daemon has
#    said READY=1, or fails with its log.
set -eu

usage() {
    sed -n '4,6p' "$0" | sed 's/^# *//' >&2
    exit 64
}

die() {
    echo "install.sh: $*" >&2
    exit 1
}

SRC=$(cd "$(dirname "$0")/.." && pwd)
VENV=/opt/dedupd
INSTANCE=
ROOTS=
QUARANTINE=
EXTRA_GROUPS=
START=yes
NL='
'

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || usage; ROOTS="$ROOTS$2$NL"; shift 2 ;;
        --quarantine) [ $# -ge 2 ] || usage; QUARANTINE=$2; shift 2 ;;
        --instance) [ $# -ge 2 ] || usage; INSTANCE=$2; shift 2 ;;
        --group) [ $# -ge 2 ] || usage; EXTRA_GROUPS="$EXTRA_GROUPS $2"; shift 2 ;;
        --no-start) START=no; shift ;;
        -h|--help) usage ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done

[ "$(id -u)" = 0 ] || die "run me as root"
[ -f "$SRC/pyproject.toml" ] && [ -f "$SRC/systemd/dedupd.service" ] || die "$SRC is not a dedupd checkout"
command -v systemctl >/dev/null || die "systemctl not found: this host does not run systemd"

if [ -n "$INSTANCE" ]; then
    case $INSTANCE in
        config|*[!A-Za-z0-9_]*) die "--instance: use letters, digits and _ (and not 'config'): $INSTANCE" ;;
    esac
    UNIT="dedupd@$INSTANCE.service"
    CONFIG="/etc/dedupd/$INSTANCE.yaml"
    STATE="/var/lib/dedupd/$INSTANCE"
else
    UNIT=dedupd.service
    CONFIG=/etc/dedupd/config.yaml
    STATE=/var/lib/dedupd
fi

# --- 1. Python, the venv, the command -------------------------------------------
NEW_ENOUGH='import sys; sys.exit(sys.version_info < (3, 11))'
if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" -c "$NEW_ENOUGH" || die "$VENV has a Python older than 3.11: remove it, or make it with a newer one"
else
    if ! python3 -c "import ensurepip, venv; $NEW_ENOUGH" 2>/dev/null; then
        if command -v python3 >/dev/null && ! python3 -c "$NEW_ENOUGH"; then
            die "dedupd needs Python 3.11 or later; python3 is $(python3 -V 2>&1): make $VENV with a newer one (python3.11 -m venv $VENV) and run me again"
        fi
        command -v apt-get >/dev/null || die "python3 with venv is missing: install it (Debian/Ubuntu: python3-venv)"
        echo "== apt-get install python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    echo "== $VENV: a new virtualenv"
    python3 -m venv "$VENV"
fi
echo "== $VENV: installing $SRC"
# --upgrade: reinstall this checkout on every run (an upgrade), its dependencies only when needed
"$VENV/bin/pip" install --quiet --upgrade "$SRC"
ln -sfn "$VENV/bin/dedupd" /usr/local/bin/dedupd
"$VENV/bin/dedupd" --version

# --- 2. the user ----------------------------------------------------------------
echo "== the system user dedupd"
install -d -m 0755 /etc/sysusers.d /etc/dedupd /etc/systemd/system
install -m 0644 "$SRC/systemd/sysusers.d/dedupd.conf" /etc/sysusers.d/dedupd.conf
systemd-sysusers /etc/sysusers.d/dedupd.conf
for group in $EXTRA_GROUPS; do
    usermod -a -G "$group" dedupd
done

# --- 3. the units ---------------------------------------------------------------
install -m 0644 "$SRC/systemd/dedupd.service" "$SRC/systemd/dedupd@.service" /etc/systemd/system/

# --- 4. the config --------------------------------------------------------------
if [ ! -e "$CONFIG" ]; then
    [ -n "$ROOTS" ] && [ -n "$QUARANTINE" ] || die "$CONFIG does not exist: give --root and --quarantine to write one"
    echo "== $CONFIG: written from --root and --quarantine"
    umask 022
    {
        echo "# Written by systemd/install.sh; see config.example.yaml for every key."
        echo "# After changing roots, quarantine_dir, db or audit_jsonl run install.sh again."
        echo "roots:"
        printf '%s' "$ROOTS" | while IFS= read -r root; do
            printf '  - "%s"\n' "$root"
        done
        printf 'quarantine_dir: "%s"\n' "$QUARANTINE"
        echo "actions:"
        echo "  exact: quarantine"
        echo "  pixel: log"
        echo "  near: log"
    } > "$CONFIG.new"
    mv "$CONFIG.new" "$CONFIG"
elif [ -n "$ROOTS$QUARANTINE" ]; then
    echo "== $CONFIG exists: kept as it is (--root and --quarantine only write a new one)"
fi
# What the sandbox must let through, from the config as dedupd reads it: lines
# "rw PATH" (written), "mount PATH" (to be mounted first), "quarantine PATH".
PATHS=$("$VENV/bin/python" - "$CONFIG" "$STATE" <<'EOF'
import sys
from pathlib import Path

from dedupd import config as config_module
from dedupd.errors import ConfigError
from dedupd.models import Action

try:
    cfg = config_module.load(Path(sys.argv[1]))
except ConfigError as exc:
    print(f"install.sh: {exc}", file=sys.stderr)
    sys.exit(78)
state = Path(sys.argv[2])
moves = any(a is not Action.LOG for a in (cfg.actions.exact, cfg.actions.pixel, cfg.actions.near))
written = [*cfg.roots, cfg.quarantine_dir] if moves else []
written += [p.parent for p in (cfg.db, cfg.audit_jsonl) if p is not None and not p.is_relative_to(state)]
for kind, paths in (("rw", written), ("mount", [*cfg.roots, *written])):
    for path in dict.fromkeys(p for p in paths if p is not None):
        if any(c.isspace() or c in "\"'\\%;" for c in str(path)):
            sys.exit(f"install.sh: write the drop-in by hand for a path with spaces, quotes, % or ; in it: {path!r}")
        print(kind, path)
if moves and cfg.quarantine_dir is not None:
    print("quarantine", cfg.quarantine_dir)
EOF
)

# --- 5. the quarantine ----------------------------------------------------------
QDIR=$(printf '%s\n' "$PATHS" | sed -n 's/^quarantine //p')
if [ -n "$QDIR" ] && [ ! -e "$QDIR" ]; then
    echo "== $QDIR: the quarantine, owned by dedupd"
    install -d -o dedupd -g dedupd -m 0750 "$QDIR"
fi
# now that the quarantine exists: the check 'dedupd run' makes (exit 78 if invalid)
"$VENV/bin/dedupd" check-config "$CONFIG" >/dev/null

# --- 6. the drop-in -------------------------------------------------------------
DROPIN="/etc/systemd/system/$UNIT.d"
echo "== $DROPIN/10-paths.conf: what the sandbox lets dedupd write"
install -d -m 0755 "$DROPIN"
{
    echo "# Written by systemd/install.sh from $CONFIG: run it again after changing"
    echo "# roots, quarantine_dir, db or audit_jsonl there. Other changes: another file here."
    echo "[Unit]"
    printf '%s\n' "$PATHS" | sed -n 's/^mount /RequiresMountsFor=/p'
    echo "[Service]"
    echo "# Drop the unit's example paths; '-': a missing path is dedupd's exit 78, not 226/NAMESPACE."
    echo "ReadWritePaths="
    printf '%s\n' "$PATHS" | sed -n 's/^rw /ReadWritePaths=-/p'
    if printf '%s\n' "$PATHS" | grep -Eq '^mount (/home|/root|/run/user)(/|$)'; then
        echo "# A path under /home: visible, read-only except the ReadWritePaths= above."
        echo "ProtectHome=read-only"
    fi
} > "$DROPIN/10-paths.conf.new"
mv "$DROPIN/10-paths.conf.new" "$DROPIN/10-paths.conf"

# --- 7. start -------------------------------------------------------------------
systemctl daemon-reload
[ "$START" = yes ] || exit 0
systemctl enable --quiet "$UNIT"
echo "== systemctl restart $UNIT"
if ! systemctl restart "$UNIT"; then
    journalctl -u "$UNIT" -n 20 --no-pager -o cat >&2 || true
    die "$UNIT did not start: see above, and systemctl status $UNIT"
fi
systemctl --no-pager status "$UNIT" | head -n 12
