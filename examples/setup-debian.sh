#!/usr/bin/env bash
# Installs, idempotently, every Debian package this project needs to build, run and test:
#   containerd (>= 1.7), runc, CNI plugins, protobuf-compiler (k8s-cri build), busybox-static
#   (the locally built images), docker-registry + apache2-utils + skopeo (image pull tests),
#   iproute2 / util-linux / procps (test harness tools).
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
          apache2-utils skopeo iproute2 util-linux procps ca-certificates pkg-config)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

apt_updated=0
apt_update() {
  if [ "$apt_updated" -eq 0 ]; then apt-get update -qq; apt_updated=1; fi
}

if [ "${#missing[@]}" -gt 0 ]; then
  apt_update
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
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
    trap 'rm -rf "$state"' EXIT
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
echo "setup-debian.sh: ready ($(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1{print $3}'))"
