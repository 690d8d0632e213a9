#!/usr/bin/env bash
# Checks a package built by build-deb.sh without installing it on this machine:
# unpacks it into a scratch root, runs the binaries from there, and verifies
# the unit, the maintainer scripts, the manual pages and the completion.
#
#   packaging/check-deb.sh [--install] dist/distcache_VERSION_ARCH.deb
#
# With --install (root only; CI's throwaway machine) it then installs the
# package for real with dpkg, checks what the maintainer scripts did (the
# distcache user, the config's owner and mode, no systemctl without systemd),
# runs dcnode from /usr/bin as that user, and purges the package again.
#
# CI runs it (.ci/run). Needs dpkg-deb and systemd-analyze; groff and bash are
# used when present.
set -euo pipefail
install=false
if [ "${1:-}" = --install ]; then install=true; shift; fi
deb=${1:?usage: check-deb.sh [--install] PACKAGE.deb}
fail() { echo "check-deb: $*" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
dpkg-deb -e "$deb" "$root/DEBIAN"
version=$(dpkg-deb -f "$deb" Version)

for f in usr/bin/dcnode usr/bin/dcctl lib/systemd/system/dcnode.service etc/distcache/dcnode.conf \
  usr/share/man/man8/dcnode.8.gz usr/share/man/man1/dcctl.1.gz \
  usr/share/bash-completion/completions/dcctl usr/share/doc/distcache/operations.md \
  usr/share/doc/distcache/grafana-dashboard.json usr/share/doc/distcache/alerts.yml; do
  [ -e "$root/$f" ] || fail "$f missing from $deb"
done
grep -qx /etc/distcache/dcnode.conf "$root/DEBIAN/conffiles" || fail "dcnode.conf is not a conffile"

# The binaries run from the scratch root and report the package's version.
got=$("$root/usr/bin/dcnode" -version)
case $got in "dcnode $version "* | "dcnode $version") ;; *) fail "dcnode -version: '$got', want $version" ;; esac
got=$("$root/usr/bin/dcctl" version --addr 127.0.0.1:1 2>/dev/null)
case $got in *"$version"*) ;; *) fail "dcctl version: '$got', want $version" ;; esac
echo "check-deb: dcnode -version: $("$root/usr/bin/dcnode" -version)"

# The shipped config is read without complaint and sets the packaged data dir.
"$root/usr/bin/dcnode" -config "$root/etc/distcache/dcnode.conf" -print-config |
  grep '^data-dir = /var/lib/distcache ' >/dev/null || fail "the shipped config does not set data-dir = /var/lib/distcache"

# The unit, against this machine's systemd (targets, /bin/kill), with
# ExecStart pointing into the scratch root: systemd-analyze checks that the
# binary is there and executable.
unitdir=$(mktemp -d)
trap 'rm -rf "$root" "$unitdir"' EXIT
sed "s|/usr/bin/dcnode|$root/usr/bin/dcnode|g" "$root/lib/systemd/system/dcnode.service" >"$unitdir/dcnode.service"
# It exits 0 on directives it ignores, so any output is a failure too.
out=$(systemd-analyze verify --man=no "$unitdir/dcnode.service" 2>&1) || fail "systemd-analyze verify dcnode.service: $out"
[ -z "$out" ] || fail "systemd-analyze verify dcnode.service: $out"
# The hardening holds: systemd's own exposure score (0 best, 10 worst) at most 2.0.
systemd-analyze security --offline=true --threshold=20 "$unitdir/dcnode.service" >/dev/null 2>&1 ||
  fail "dcnode.service exposure above 2.0: $(systemd-analyze security --offline=true "$unitdir/dcnode.service" 2>&1 | tail -1)"
grep -q '^Type=notify$' "$root/lib/systemd/system/dcnode.service" || fail "the unit is not Type=notify"

# Maintainer scripts: POSIX sh, and no systemctl unless booted with systemd.
for s in postinst prerm postrm; do
  sh -n "$root/DEBIAN/$s" || fail "$s: syntax"
  if grep -n systemctl "$root/DEBIAN/$s" | grep -v '^[0-9]*: *#' >/dev/null &&
    ! grep -q 'if .*-d /run/systemd/system' "$root/DEBIAN/$s"; then
    fail "$s calls systemctl without checking /run/systemd/system"
  fi
done

# Manual pages render without warnings; the completion script loads.
if command -v groff >/dev/null; then
  for m in usr/share/man/man8/dcnode.8.gz usr/share/man/man1/dcctl.1.gz; do
    w=$(zcat "$root/$m" | groff -man -Tutf8 -ww -z 2>&1) || fail "$m: groff failed"
    [ -z "$w" ] || fail "$m: $w"
  done
fi
bash -n "$root/usr/share/bash-completion/completions/dcctl" || fail "completion script: syntax"

if $install; then
  [ "$(id -u)" = 0 ] || fail "--install needs root"
  if dpkg -s distcache >/dev/null 2>&1; then fail "distcache is already installed here; not touching it"; fi
  had_user=false
  if getent passwd distcache >/dev/null; then had_user=true; fi
  cleanup() {
    dpkg --purge distcache >/dev/null 2>&1 || true
    if ! $had_user; then userdel distcache 2>/dev/null || true; fi
    rm -rf "$root" "$unitdir"
  }
  trap cleanup EXIT
  out=$(dpkg -i "$deb" 2>&1) || fail "dpkg -i: $out"
  if [ ! -d /run/systemd/system ] && printf '%s' "$out" | grep -i systemctl >/dev/null; then
    fail "the maintainer scripts called systemctl on a machine not booted with systemd: $out"
  fi
  getent passwd distcache >/dev/null || fail "postinst did not create the distcache user"
  [ "$(stat -c '%U:%G %a' /etc/distcache/dcnode.conf)" = "root:distcache 640" ] ||
    fail "/etc/distcache/dcnode.conf is $(stat -c '%U:%G %a' /etc/distcache/dcnode.conf), want root:distcache 640"
  got=$(/usr/bin/dcnode -version)
  case $got in "dcnode $version "* | "dcnode $version") ;; *) fail "installed dcnode -version: '$got'" ;; esac
  # The node's user can read its config (what the unit's User= does).
  setpriv --reuid=distcache --regid=distcache --clear-groups --inh-caps=-all \
    /usr/bin/dcnode -config /etc/distcache/dcnode.conf -print-config >/dev/null ||
    fail "user distcache cannot read /etc/distcache/dcnode.conf"
  out=$(dpkg -r distcache 2>&1) || fail "dpkg -r: $out"
  [ ! -e /usr/bin/dcnode ] || fail "dpkg -r left /usr/bin/dcnode"
  echo "check-deb: installed, checked and removed again"
fi
echo "check-deb: $deb OK"
