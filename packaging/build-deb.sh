#!/usr/bin/env bash
# Builds the distcache Debian package: dcnode and dcctl (version stamped), the
# systemd unit, the default config file, the manual pages, dcctl's bash
# completion and the operations guide.
#
#   packaging/build-deb.sh [OUTDIR]        (default OUTDIR: dist/)
#
# The version is $DISTCACHE_VERSION if set, else derived from git: the nearest
# tag without its "v" (1.2.0), or 0.0.0~gitYYYYMMDD.SHORTSHA on an untagged
# commit (~ sorts before any release), with +dirty for a modified work tree;
# 0.0.0~nogit without git.
# It is stamped into the binaries (dcnode -version) and is the package's.
# Needs go, dpkg-deb and gzip; no root (dpkg-deb --root-owner-group).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-dist}

version=${DISTCACHE_VERSION:-}
if [ -z "$version" ] && ! git rev-parse HEAD >/dev/null 2>&1; then
  version=0.0.0~nogit # a source tree without git (or one git refuses to read)
fi
if [ -z "$version" ]; then
  if tag=$(git describe --tags --abbrev=0 2>/dev/null); then
    version=${tag#v}
    if [ "$(git rev-list -n1 "$tag")" != "$(git rev-parse HEAD)" ]; then
      version="$version+git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
    fi
  else
    version="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d).$(git rev-parse --short=12 HEAD)"
  fi
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    version="$version+dirty"
  fi
fi
case $version in
  [0-9]*) ;;
  *) echo "build-deb: version $version must start with a digit (Debian policy)" >&2; exit 2 ;;
esac
arch=$(dpkg --print-architecture)
stampvar=github.com/distcache-replicated/distcache/internal/version.stamp

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" "$root/etc/distcache" \
  "$root/usr/share/man/man1" "$root/usr/share/man/man8" "$root/usr/share/bash-completion/completions" \
  "$root/usr/share/doc/distcache"

echo "build-deb: distcache $version ($arch)"
for cmd in dcnode dcctl; do
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $stampvar=$version" -o "$root/usr/bin/$cmd" "./cmd/$cmd"
done
got=$("$root/usr/bin/dcnode" -version)
case $got in
  "dcnode $version"*) ;;
  *) echo "build-deb: dcnode -version says '$got', not $version" >&2; exit 1 ;;
esac

install -m 644 packaging/dcnode.service "$root/lib/systemd/system/dcnode.service"
install -m 640 packaging/dcnode.conf "$root/etc/distcache/dcnode.conf"
gzip -9n <packaging/man/dcnode.8 >"$root/usr/share/man/man8/dcnode.8.gz"
gzip -9n <packaging/man/dcctl.1 >"$root/usr/share/man/man1/dcctl.1.gz"
"$root/usr/bin/dcctl" completion bash >"$root/usr/share/bash-completion/completions/dcctl"
install -m 644 docs/operations.md README.md "$root/usr/share/doc/distcache/"
install -m 644 monitoring/grafana-dashboard.json monitoring/alerts.yml "$root/usr/share/doc/distcache/"
cat >"$root/usr/share/doc/distcache/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: distcache, replicated
Source: https://github.com/distcache-replicated/distcache
EOF
chmod 644 "$root/usr/share/doc/distcache/copyright"

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: distcache
Version: $version
Architecture: $arch
Maintainer: distcache developers <distcache@localhost>
Installed-Size: $size
Depends: adduser
Recommends: systemd
Section: net
Priority: optional
Homepage: https://github.com/distcache-replicated/distcache
Description: replicated TLS session cache (distcache protocol, Raft)
 dcnode serves TLS session caches to Apache, stunnel, nginx, HAProxy and Go
 servers over the distcache, memcache, Redis RESP and sessiond protocols, and
 replicates the sessions and session-ticket keys over Raft. dcctl operates a
 cluster and replaces the original dc_client, dc_snoop and dc_test.
 .
 The package installs the dcnode systemd unit (enabled, not started) and a
 default configuration for a one-node cluster on loopback in
 /etc/distcache/dcnode.conf; see /usr/share/doc/distcache/operations.md.
EOF
echo /etc/distcache/dcnode.conf >"$root/DEBIAN/conffiles"

cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd distcache >/dev/null; then
    adduser --system --group --home /var/lib/distcache --no-create-home \
      --gecos "distcache node" --shell /usr/sbin/nologin distcache >/dev/null
  fi
  # The config may hold a gossip key inline: readable by the node, not by all.
  chown root:distcache /etc/distcache/dcnode.conf
  chmod 640 /etc/distcache/dcnode.conf
  # Only on a machine booted with systemd (not in a chroot, a container build
  # or an image being assembled).
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
    systemctl enable dcnode.service >/dev/null || true
    if systemctl is-active --quiet dcnode.service; then
      echo "distcache: restart dcnode when ready (one node at a time: see the operations guide)"
    else
      echo "distcache: edit /etc/distcache/dcnode.conf, then: systemctl start dcnode"
    fi
  fi
fi
exit 0
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# On removal (not on upgrade: the operator restarts nodes one at a time).
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl disable --now dcnode.service >/dev/null || true
fi
exit 0
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
# The data in /var/lib/distcache and the distcache user are kept, even on
# purge: a node's Raft log may be the last copy of a cluster's sessions.
exit 0
EOF
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/distcache_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
