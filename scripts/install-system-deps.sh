#!/usr/bin/env bash
# Debian packages the test suite needs: a real sshd, a real Docker engine and registry, Debian's
# Fashion-MNIST (real data the trainer must learn), the tools that build test base images,
# mkfs.ext4 (a loop-device filesystem stands for a kept EBS volume), and what builds the
# trainer's one C extension, trainer._jpegcrop (a compiler, Python's and libjpeg's headers).
# Installs only what is missing; needs root (CI runs as root). Elsewhere it prints what to install.
set -euo pipefail
pkgs=(openssh-server docker.io docker-registry dataset-fashion-mnist busybox-static debootstrap netcat-openbsd rsync e2fsprogs
      gcc libc6-dev python3-dev libjpeg-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "system packages: all present"; exit 0; }
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${missing[*]} (install them with: sudo apt-get install ${missing[*]})" >&2
  echo "tests that need them will be skipped (or fail under CI=true)" >&2
  exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
