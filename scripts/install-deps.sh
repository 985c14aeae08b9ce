#!/usr/bin/env bash
# Installs the Debian 12 packages Temper builds, runs and tests with, skipping those
# already present. Needs root (or sudo) only when something is missing.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config git
  openmpi-bin libopenmpi-dev libhdf5-openmpi-dev
  libopenblas-dev libopenblas-openmp-dev libfmt-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libpcre2-dev
  libgtest-dev
  clang libclang-rt-14-dev libomp-14-dev  # the asan preset: sanitizers and libFuzzer (make test-fuzz, test-asan)
  iproute2 util-linux                  # the two-node test over network namespaces
  slurm-wlm munge libpmix-dev          # the slurm label's one-machine cluster (libpmix.so: srun --mpi=pmix)
  python3 python3-numpy python3-torch python3-h5py python3-venv  # the reference implementation for the tests
  chromium python3-pil                 # the report test: a real browser's screenshot, read back
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
