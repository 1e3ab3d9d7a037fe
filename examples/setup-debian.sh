#!/usr/bin/env bash
# Installs, idempotently, every Debian package this project needs to build, run and test:
#   containerd (>= 1.7), runc, CNI plugins, protobuf-compiler (k8s-cri build), busybox-static
#   (the locally built images), docker-registry + apache2-utils + skopeo (image pull tests),
#   etcd-server (the control plane test harness's etcd, next to the upstream Kubernetes
#   binaries of ../shared/k8s/), iproute2 / util-linux / procps (test harness tools).
# Debian's etcd-server would start a system etcd on 127.0.0.1:2379 where services can start
# (systemd, or sysvinit in a runlevel); the tests start their own on private ports, so the
# package is installed with service starts denied, and its service is left disabled and
# stopped.
# Run as root on Debian 12 or newer. Debian 12 ships containerd 1.6 (end of life, no CRI
# container events); there the script installs Debian 13's containerd 1.7 package alone,
# from a private apt state, without adding Debian 13 to the machine's apt sources.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-debian.sh: must run as root (it installs Debian packages)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive

packages=(runc containernetworking-plugins protobuf-compiler busybox-static docker-registry
          apache2-utils skopeo etcd-server iproute2 util-linux procps ca-certificates pkg-config)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

apt_updated=0
apt_update() {
  if [ "$apt_updated" -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
}

# A policy-rc.d of our own (denying every service start) while packages install, unless the
# machine has one; removed on exit.
policy_rc_d=/usr/sbin/policy-rc.d
own_policy=0
state=
cleanup() {
  if [ "$own_policy" -eq 1 ]; then rm -f "$policy_rc_d"; fi
  if [ -n "$state" ]; then rm -rf "$state"; fi
}
trap cleanup EXIT

if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  if [[ " ${missing[*]} " == *" etcd-server "* ]] && [ ! -e "$policy_rc_d" ]; then
    printf '#!/bin/sh\n# setup-debian.sh: no service starts while it installs packages\nexit 101\n' \
      > "$policy_rc_d"
    chmod 755 "$policy_rc_d"
    own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ "$own_policy" -eq 1 ]; then rm -f "$policy_rc_d"; own_policy=0; fi
fi

# No system etcd: the package's service disabled (no start at boot) and stopped if it runs.
# Each step only acts when needed, so a second run changes nothing.
if [ -d /run/systemd/system ]; then
  if systemctl --quiet is-enabled etcd.service 2>/dev/null ||
     systemctl --quiet is-active etcd.service 2>/dev/null; then
    systemctl disable --now etcd.service >/dev/null 2>&1 || true
    echo "setup-debian.sh: disabled and stopped the etcd-server package's system etcd"
  fi
else
  if [ -x /etc/init.d/etcd ] && /etc/init.d/etcd status >/dev/null 2>&1; then
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
    echo "setup-debian.sh: stopped the etcd-server package's system etcd"
  fi
  if compgen -G '/etc/rc[2-5].d/S[0-9][0-9]etcd' >/dev/null; then
    update-rc.d etcd disable >/dev/null 2>&1 || true
  fi
  if [ -e /etc/systemd/system/multi-user.target.wants/etcd.service ] &&
     command -v deb-systemd-helper >/dev/null 2>&1; then
    deb-systemd-helper disable etcd.service >/dev/null 2>&1 || true
  fi
fi

# containerd >= 1.7
containerd_ok() {
  command -v containerd >/dev/null 2>&1 || return 1
  local v
  v=$(containerd --version | awk '{print $3}' | sed 's/^v//')
  dpkg --compare-versions "$v" ge 1.7
}

if ! containerd_ok; then
  apt_update
  candidate=$(apt-cache policy containerd | awk '/Candidate:/ {print $2}')
  if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] &&
     dpkg --compare-versions "$candidate" ge 1.7; then
    apt-get install -y -qq --no-install-recommends containerd
  else
    # The URI of the machine's own Debian entry (deb822 or one-line format), suite trixie.
    uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
          grep -v -- '-security' | head -n1 || true)
    if [ -z "$uri" ]; then
      uri=$(grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
            grep -v -- '-security' | sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' | head -n1 || true)
    fi
    uri=${uri:-http://deb.debian.org/debian}
    state=$(mktemp -d /tmp/node-agent-apt.XXXXXX)
    mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$state/parts"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" \
      > "$state/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$state/sources.list" -o "Dir::Etc::SourceParts=$state/parts"
              -o "Dir::State::Lists=$state/lists" -o "Dir::Cache=$state/cache"
              -o "APT::Get::List-Cleanup=0")
    apt-get "${apt_opts[@]}" update -qq
    (cd "$state" && apt-get "${apt_opts[@]}" download containerd)
    dpkg -i "$state"/containerd_*.deb
    apt-mark hold containerd >/dev/null
  fi
fi

containerd_ok || { echo "setup-debian.sh: containerd >= 1.7 could not be installed" >&2; exit 1; }
echo "setup-debian.sh: ready ($(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'), etcd $(etcd --version | awk 'NR==1{print $3}'))"
