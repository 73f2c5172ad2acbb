#!/bin/sh
# The README's "Two commands" on a fresh machine (`make fresh-check`, CI).
#
# Builds a minimal Debian 12 root (debootstrap --variant=minbase bookworm, the
# mirror taken from this machine's own apt sources), copies the checkout into
# it, installs only what the README tells a new user to have (make), and runs
# the README's two commands exactly as the README writes them, inside the
# root (chroot). Whatever an earlier session installed by hand on this
# machine is therefore invisible to it: a missing install step fails here.
#
# The root sits beside the checkout's shared data the way the checkout does
# (ROOT/work/main and ROOT/work/shared, the latter a read-only bind mount when
# ../shared exists), so tests with real weights run as on a developer's
# machine. Downloaded .deb files are kept in FRESH_DEBS between runs (the
# same packages, only not downloaded again); the root itself is always new.
#
# Needs root (debootstrap, chroot, mount). Environment: FRESH_ROOT (default
# /var/tmp/lwfm-fresh-root), FRESH_DEBS (/var/cache/lwfm-fresh-debs), FRESH_KEEP=1
# keeps the root afterwards. Prints each stage's duration; on failure, the
# stage's name and the end of its log.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${FRESH_ROOT:-/var/tmp/lwfm-fresh-root}
DEBS=${FRESH_DEBS:-/var/cache/lwfm-fresh-debs}
LOGS=${FRESH_LOGS:-/var/tmp/lwfm-fresh-logs}
SUITE=bookworm

if [ "$(id -u)" != 0 ]; then
    echo "fresh_machine.sh: needs root (debootstrap, chroot, mount); run it with sudo" >&2
    exit 2
fi

# --- helpers -----------------------------------------------------------------

mounted=""
unmount_all() {
    # Reverse order of mounting; lazily, so that a process still holding a
    # file cannot leave the root mounted.
    for m in $mounted; do umount -l "$m" 2>/dev/null || true; done
    mounted=""
}
# Mount points still under the root (none once everything is unmounted).
mounts_under_root() {
    awk -v r="$ROOT/" 'index($2, r) == 1 { print $2 }' /proc/mounts
}
# Deletes the root only when nothing is mounted under it any more: a bind of
# /dev or of the shared data left behind would otherwise be deleted through.
remove_root() {
    [ -d "$ROOT" ] || return 0
    if [ -n "$(mounts_under_root)" ]; then
        echo "fresh_machine.sh: still mounted under $ROOT, not deleting it:" >&2
        mounts_under_root >&2
        return 1
    fi
    rm -rf --one-file-system "$ROOT"
}
cleanup() {
    status=$?
    unmount_all
    if [ "${FRESH_KEEP:-0}" != 1 ]; then remove_root || status=1; fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

bind() {   # bind SOURCE TARGET [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounted="$2 $mounted"
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# stage NAME COMMAND...: runs the command with its output in a log of its own,
# prints the duration; on failure names the stage and shows the log's end.
stage() {
    name=$1; shift
    log="$LOGS/$(echo "$name" | tr ' /' '__').log"
    printf '== fresh machine: %s ... ' "$name"
    start=$(date +%s)
    if "$@" >"$log" 2>&1; then
        echo "ok ($(( $(date +%s) - start )) s)"
    else
        rc=$?
        echo "FAILED (exit $rc after $(( $(date +%s) - start )) s)"
        echo "== stage '$name' failed; last lines of $log:"
        tail -n 60 "$log" | sed 's/^/   | /'
        exit 1
    fi
}

# The first http(s) URI of this machine's Debian apt sources (deb822 or
# one-line format): the mirror this machine is allowed to reach.
debian_mirror() {
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; break } }' "$f"
    done
}
MIRROR=$(debian_mirror | grep -v -e security -e '/debian-ports' | grep -m1 -E '/debian/?$' || true)
if [ -z "$MIRROR" ]; then
    echo "fresh_machine.sh: no Debian mirror in /etc/apt/sources.list*" >&2
    exit 2
fi

# The README's two commands: the lines of the first sh block after the
# "## Two commands" heading, exactly as written there.
readme_commands() {
    awk '/^## Two commands/ { sec = 1; next }
         sec && /^## / { exit }
         sec && /^```/ { if (blk) exit; blk = 1; next }
         sec && blk && NF { print }' "$src/README.md"
}
COMMANDS=$(readme_commands)
if [ "$(printf '%s\n' "$COMMANDS" | grep -c .)" != 2 ]; then
    echo "fresh_machine.sh: README.md's \"Two commands\" section should hold two commands, found:" >&2
    printf '%s\n' "$COMMANDS" >&2
    exit 2
fi

# --- stages ------------------------------------------------------------------

mkdir -p "$LOGS" "$DEBS"
rm -f "$LOGS"/*.log
if [ -d "$ROOT" ]; then
    # A root left by an interrupted run: unmount whatever is still mounted there.
    mounts_under_root | sort -r | xargs -r -n1 umount -l
    remove_root || exit 2
fi
echo "== fresh machine: Debian $SUITE from $MIRROR into $ROOT"

host_tools() {
    command -v debootstrap >/dev/null && return 0
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
}
stage "debootstrap present" host_tools
stage "minimal root (debootstrap)" debootstrap --variant=minbase --cache-dir="$DEBS" "$SUITE" "$ROOT" "$MIRROR"

copy_checkout() {
    mkdir -p "$ROOT/work/main"
    # The checkout's files as git has them (tracked and untracked-but-not-
    # ignored): no build directories, no caches of this machine.
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 -r sh -c 'for f; do [ -e "$f" ] || [ -L "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -xf - -C "$ROOT/work/main"
    cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
}
stage "copy the checkout" copy_checkout

bind /proc "$ROOT/proc"
bind /sys "$ROOT/sys"
bind /dev "$ROOT/dev"
bind /dev/pts "$ROOT/dev/pts"
bind "$DEBS" "$ROOT/var/cache/apt/archives"
if [ -d "$src/../shared" ]; then bind "$(cd "$src/../shared" && pwd)" "$ROOT/work/shared" ro; fi

in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive /bin/sh -c "$1"
}
# What the README tells a new user to have before the two commands.
stage "what the README asks for (make)" in_root 'apt-get update && apt-get install -y --no-install-recommends make'

for n in 1 2; do
    cmd=$(printf '%s\n' "$COMMANDS" | sed -n "${n}p")
    label=$(printf '%s' "${cmd%%#*}" | sed 's/[[:space:]]*$//')
    stage "README command $n: $label" in_root "cd /work/main && $cmd"
done
echo "== fresh machine: the README's two commands pass in a fresh Debian $SUITE"
