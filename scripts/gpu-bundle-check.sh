#!/usr/bin/env bash
# Proves that a bundle (scripts/gpu-bundle.sh) runs with nothing from the system but glibc
# and the C++ runtime, as on the GPU host. In a private mount namespace (unshare -m; needs
# root), /usr/lib and /usr/lib/x86_64-linux-gnu are replaced by folders that hold only
# glibc, libstdc++ and libgcc_s; /usr/local (the CUDA toolkit), /opt and the ld.so cache
# are hidden; cuBLAS/cuBLASLt and NCCL are offered the way the host offers them, in a
# Python environment's site-packages/nvidia/*/lib (here: this machine's files, bind-
# mounted there one by one). There, with the bundle's env.sh:
#   1. a control: temper without the bundle's libraries must fail to start;
#   2. temper --version;
#   3. temper train on configs/recipes/tiny.yaml (a few steps, CPU);
#   4. temper_gpu_tests, every test (they skip: no GPU here);
#   5. orterun -np 2 temper train (OpenMPI and PMIx relocated into the bundle, two ranks).
# Prints each step's verdict and key lines; exits 1 when one fails.
#
# usage: scripts/gpu-bundle-check.sh [BUNDLE]   (default bundle/)
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(cd "${1:-bundle}" && pwd)
[ -f "$SRC/env.sh" ] && [ -f "$SRC/unpack.sh" ] || { echo "bundle-check: no bundle at $SRC" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "bundle-check: needs root (a private mount namespace)" >&2; exit 1; }
W=$(mktemp -d /tmp/gpu-bundle-check.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$W"' EXIT
B=$(bash "$SRC/unpack.sh" "$W/bundle")  # as gpu-run.sh does first on the host
SYS=/usr/lib/x86_64-linux-gnu

# What the host is allowed to provide: glibc, the C++ runtime.
mkdir -p "$W/usrlib/x86_64-linux-gnu" "$W/syslib" "$W/empty"
for f in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libmvec.so.1 libpthread.so.0 libdl.so.2 \
         librt.so.1 libresolv.so.2 libutil.so.1 libstdc++.so.6 libgcc_s.so.1; do
  cp -L "$SYS/$f" "$W/syslib/"
done
: > "$W/ld.so.cache"
# The host's Python environment: cuBLAS, cuBLASLt and NCCL where the bundle's binary
# found them here (ldd), as files of site-packages/nvidia/*/lib.
declare -A nvidia_pkg=([libcublas.so.13]=cublas [libcublasLt.so.13]=cublas [libnccl.so.2]=nccl)
binds=()
while read -r soname path; do
  pkg=${nvidia_pkg[$soname]:-}
  [ -n "$pkg" ] || continue
  mkdir -p "$W/site/nvidia/$pkg/lib"
  : > "$W/site/nvidia/$pkg/lib/$soname"
  binds+=("$(readlink -f "$path")" "$W/site/nvidia/$pkg/lib/$soname")
done < <(for b in "$B"/bin/*; do ldd "$b"; done | awk '$2 == "=>" {print $1, $3}' | sort -u)
NVIDIA_DIRS=$(ls -d "$W"/site/nvidia/*/lib | tr '\n' ':')

# The commands, run inside the namespace after the mounts: bash builtins and the
# bundle's own binaries only (no coreutils can start there). Logs and exit codes go to $W.
cat > "$W/inside.sh" <<EOF
set -u
mount_bind() { mount --bind "\$1" "\$2" || { echo "mount \$1 on \$2 failed" > $W/mount.err; exit 1; }; }
$(for ((i = 0; i < ${#binds[@]}; i += 2)); do echo "mount_bind '${binds[i]}' '${binds[i+1]}'"; done)
mount_bind $W/empty /usr/local
mount_bind $W/empty /opt
mount_bind $W/ld.so.cache /etc/ld.so.cache
mount_bind $W/syslib $W/usrlib/x86_64-linux-gnu
mount --rbind $W/usrlib /usr/lib || { echo "mount over /usr/lib failed" > $W/mount.err; exit 1; }
# From here on no external command of the system can start: only builtins and the bundle.
files=($SYS/*); echo "\${#files[@]} files in $SYS: \${files[*]##*/}" > $W/visible.txt
for f in /usr/lib/x86_64-linux-gnu/libmpi.so.40 /usr/lib/x86_64-linux-gnu/libopenblas.so.0 \\
         /usr/local/cuda/lib64/libcublasLt.so.13 /usr/lib/x86_64-linux-gnu/openmpi; do
  [ -e "\$f" ] && echo "VISIBLE \$f" >> $W/visible.txt
done
run() { local name=\$1; shift; "\$@" > $W/\$name.log 2>&1; echo \$? > $W/\$name.rc; }
run control $B/bin/temper --version
source $B/env.sh
export LD_LIBRARY_PATH=\$LD_LIBRARY_PATH:$NVIDIA_DIRS
cd $W
run version temper --version
run train temper train $B/configs/recipes/tiny.yaml train.steps=3 train.eval_every=0 out_dir=$W/run1
run gpu_tests temper_gpu_tests --gtest_color=no
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
run mpirun orterun -np 2 --oversubscribe --bind-to none temper train $B/configs/recipes/tiny.yaml \\
  train.steps=3 train.eval_every=0 out_dir=$W/run2
EOF
unshare -m --propagation private env -i PATH=/usr/bin:/bin HOME="$W" bash "$W/inside.sh"
[ -f "$W/mount.err" ] && { cat "$W/mount.err" >&2; exit 1; }

echo "bundle-check: $SRC (unpacked) in a mount namespace; the system's libraries hidden:"
sed 's/^/  /' "$W/visible.txt"
fail=0
verdict() {  # NAME EXPECT(0|nonzero) PATTERN...: the exit code; every pattern in the log
  local name=$1 expect=$2 rc ok=1 p
  shift 2
  rc=$(cat "$W/$name.rc")
  if [ "$expect" = 0 ]; then [ "$rc" = 0 ] || ok=0; else [ "$rc" != 0 ] || ok=0; fi
  for p in "$@"; do grep -q -E "$p" "$W/$name.log" || ok=0; done
  printf '%s %-9s exit %s\n' "$([ $ok = 1 ] && echo ok || echo FAIL)" "$name" "$rc"
  for p in "$@"; do grep -E "$p" "$W/$name.log" | tail -2; done | sed 's/^/    /'
  [ $ok = 1 ] || { tail -20 "$W/$name.log" | sed 's/^/  | /'; fail=1; }
}
grep -q '^VISIBLE' "$W/visible.txt" && fail=1
verdict control nonzero 'error while loading shared libraries'
verdict version 0 '^temper [0-9]'
verdict train 0 'step +3/3' 'done: steps'
verdict gpu_tests 0 '^\[  (PASSED|SKIPPED|FAILED) +\] [0-9]+ test'
verdict mpirun 0 'grid: dp=2' 'step +3/3' 'done: steps'
exit $fail
