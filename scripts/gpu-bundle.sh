#!/usr/bin/env bash
# Packs the CUDA build for the GPU host into one folder that travels with a device call
# (../shared/gpu-host.md, "Way 2"): `temper`, `temper_gpu_tests` (every CUDA op against
# the CPU, and the whole training step), every shared library they load except those the
# host has itself (glibc, the C++ runtime, the NVIDIA driver, and the CUDA libraries of
# its Python environment: cudart, cuBLAS/cuBLASLt, NCCL, cuDNN), OpenMPI's and PMIx's
# plugins and help files with the environment that relocates them, the configs, and the
# scripts of the GPU check (scripts/gpu-run.sh). The CUDA runtime is linked statically.
# Prints the bundle's size; fails above the limit (default 60 MiB of the 64 that travel).
# Files over 256 KiB are stored xz-compressed; the bundle's unpack.sh restores them.
#
# usage: scripts/gpu-bundle.sh [--build DIR] [--out DIR] [--archs LIST] [--jobs N]
#   --build DIR  build tree (default build-bundle). A new tree is configured here: Release,
#                the CUDA backend, CMAKE_CUDA_ARCHITECTURES from --archs. An existing tree
#                is used as it is configured (CI packs its main build: nothing rebuilds).
#   --out DIR    the bundle (default bundle/, git-ignored); replaced.
#   --archs LIST CUDA architectures for a new tree (default "90;100" when this nvcc knows
#                sm_100, else "90"; H100/H200 are sm_90).
#   --jobs N     build parallelism (default: the number of cores)
# Then: scripts/gpu-bundle-check.sh (runs it with the system's libraries hidden) and
# scripts/gpu-run.sh --dry-run (the GPU check's steps that need no GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BUILD=build-bundle OUT=bundle ARCHS="" JOBS=$(nproc) LIMIT_MIB=${BUNDLE_LIMIT_MIB:-60}
while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --archs) ARCHS=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *) echo "gpu-bundle: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
command -v nvcc >/dev/null || export PATH=/usr/local/cuda/bin:$PATH
command -v nvcc >/dev/null || { echo "gpu-bundle: no nvcc (CUDA toolkit) found" >&2; exit 1; }

# ---- build ------------------------------------------------------------------------------
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  if [ -z "$ARCHS" ]; then
    ARCHS=90
    nvcc --list-gpu-arch 2>/dev/null | grep -qx compute_100 && ARCHS="90;100"
  fi
  # Device code compressed for size: 3.5x smaller fatbins (measured on embedding.cu).
  cuda_flags=""
  nvcc --help | grep -q -- '--compress-mode' && cuda_flags="--compress-mode=size"
  # TEMPER_PYTHON: the bundle needs no reference-test environment, so none is created.
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DTEMPER_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=$ARCHS" "-DCMAKE_CUDA_FLAGS=$cuda_flags" \
    -DTEMPER_PYTHON="$(command -v python3)"
elif [ -n "$ARCHS" ]; then
  cmake "$BUILD" "-DCMAKE_CUDA_ARCHITECTURES=$ARCHS"
fi
cache() { sed -n "s/^$1:[A-Z]*=//p" "$BUILD/CMakeCache.txt"; }
t0=$SECONDS
# temper_gpu_tests exists only in a tree with the CUDA backend.
cmake --build "$BUILD" -j "$JOBS" --target temper temper_gpu_tests
# The architectures the device code was compiled for (a tree configured elsewhere may
# differ from --archs): from the binary when cuobjdump exists, else the compile commands.
if command -v cuobjdump >/dev/null; then
  ARCHS=$(cuobjdump --list-elf "$BUILD/bin/temper" | grep -o 'sm_[0-9a-z]*' | sort -u | tr '\n' ' ')
else
  ARCHS=$(grep -o 'code=\[[^]]*\]' "$BUILD/compile_commands.json" | grep -o 'sm_[0-9a-z]*' | sort -u | tr '\n' ' ')
fi
echo "gpu-bundle: build of $BUILD ($(cache CMAKE_BUILD_TYPE), device code ${ARCHS% }) $((SECONDS - t0)) s"

# ---- pack -------------------------------------------------------------------------------
rm -rf "$OUT"
mkdir -p "$OUT"/{bin,lib,configs,scripts}
OUT=$(cd "$OUT" && pwd)
for b in temper temper_gpu_tests; do
  strip -o "$OUT/bin/$b" "$BUILD/bin/$b"  # symbols and debug info only; the device code stays
done

# What the host provides, by soname: glibc, the C++ runtime, the NVIDIA driver, and the
# CUDA libraries of its Python environment (gpu-run.sh puts those on the library path).
host_provided() {
  case $1 in
    ld-linux-x86-64.so.*|libc.so.*|libm.so.*|libmvec.so.*|libpthread.so.*|libdl.so.*|librt.so.*) return 0 ;;
    libresolv.so.*|libutil.so.*|libanl.so.*|libnss_*|libthread_db.so.*|libBrokenLocale.so.*) return 0 ;;
    libstdc++.so.*|libgcc_s.so.*) return 0 ;;
    libcuda.so.*|libnvidia-*) return 0 ;;
    libcudart.so.*|libcublas.so.*|libcublasLt.so.*|libnccl.so.*|libcudnn*.so*) return 0 ;;
  esac
  return 1
}

# OpenMPI and PMIx as Debian installs them (read from ompi_info, not guessed).
ompi_path() { ompi_info --path "$1" --parsable 2>/dev/null | sed -n "s/^path:$1://p"; }
OMPI_PKGLIBDIR=$(ompi_path pkglibdir) OMPI_PKGDATADIR=$(ompi_path pkgdatadir)
OMPI_SYSCONFDIR=$(ompi_path sysconfdir) OMPI_BINDIR=$(ompi_path bindir)
[ -d "$OMPI_PKGLIBDIR" ] || { echo "gpu-bundle: OpenMPI's plugin folder not found (ompi_info)" >&2; exit 1; }
PMIX_LIB=$(dirname "$(ldconfig -p | awk '/libpmix\.so\.2 / {print $NF; exit}')")
PMIX_HOME=$(cd "$(readlink -f "$PMIX_LIB/libpmix.so.2" | xargs dirname)/.." && pwd)  # .../pmix2

mkdir -p "$OUT"/openmpi/{bin,lib,share,etc} "$OUT"/pmix/{lib,share,etc}
cp -a "$OMPI_PKGLIBDIR" "$OUT/openmpi/lib/plugins"
cp -a "$OMPI_PKGDATADIR" "$OUT/openmpi/share/"
cp "$OMPI_SYSCONFDIR"/openmpi-mca-params.conf "$OUT/openmpi/etc/"
for b in orterun orted; do cp "$(readlink -f "$OMPI_BINDIR/$b")" "$OUT/openmpi/bin/$b"; done
ln -s orterun "$OUT/openmpi/bin/mpirun"
[ -d "$PMIX_HOME/lib/pmix" ] && cp -a "$PMIX_HOME/lib/pmix" "$OUT/pmix/lib/plugins"
[ -d "$PMIX_HOME/share/pmix" ] && cp -a "$PMIX_HOME/share/pmix" "$OUT/pmix/share/"
# (Debian's pmix-mca-params.conf only sets the plugin path, absolute: env.sh sets it instead.)

# Every library any carried binary or plugin loads (ldd lists the whole closure), under
# its soname, except what the host provides. An unresolved one is an error here.
mapfile -t objects < <(find "$OUT/bin" "$OUT/openmpi/bin" "$OUT/openmpi/lib/plugins" "$OUT/pmix/lib" \
  -type f \( -perm -u+x -o -name '*.so' \))
missing=0
while read -r soname path; do
  if [ "$path" = "not" ]; then echo "gpu-bundle: unresolved library $soname" >&2; missing=1; continue; fi
  host_provided "$soname" && continue
  [ -e "$OUT/lib/$soname" ] || cp -L "$path" "$OUT/lib/$soname"
done < <(for o in "${objects[@]}"; do ldd "$o" | awk '$2 == "=>" {print $1, $3}'; done | sort -u)
[ $missing = 0 ] || exit 1
# The C++ runtime is the host's, unless it is older than ours: then gpu-run.sh puts this
# copy first for temper's processes only (never for the host's Python).
mkdir -p "$OUT/lib/cxx"
for so in libstdc++.so.6 libgcc_s.so.1; do
  cp -L "$(ldd "$OUT/bin/temper" | awk -v s="$so" '$1 == s {print $3}')" "$OUT/lib/cxx/$so"
done

# ---- configs, scripts, environment ------------------------------------------------------
cp -a configs/models configs/recipes "$OUT/configs/"
cp scripts/gpu-run.sh scripts/gpu-bench-torch.py scripts/gpu-summary.py "$OUT/scripts/"
cat > "$OUT/env.sh" <<'EOF'
# Sourced (bash) before running anything from this bundle: its libraries first, OpenMPI and
# PMIx relocated into it, the configs for model presets. The host's CUDA libraries
# (cuBLAS, NCCL from its Python environment) are added by scripts/gpu-run.sh.
# Bash builtins only (gpu-bundle-check.sh sources it where no coreutils can start).
BUNDLE=${BASH_SOURCE[0]%/*}; [ "$BUNDLE" = "${BASH_SOURCE[0]}" ] && BUNDLE=.
BUNDLE=$(cd "$BUNDLE" && pwd)
export LD_LIBRARY_PATH=$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=$BUNDLE/bin:$BUNDLE/openmpi/bin:$PATH
export TEMPER_CONFIG_DIR=$BUNDLE/configs
export OPAL_PREFIX=$BUNDLE/openmpi OPAL_BINDIR=$BUNDLE/openmpi/bin OPAL_LIBDIR=$BUNDLE/lib
export OPAL_PKGLIBDIR=$BUNDLE/openmpi/lib/plugins OPAL_DATAROOTDIR=$BUNDLE/openmpi/share
export OPAL_DATADIR=$BUNDLE/openmpi/share OPAL_PKGDATADIR=$BUNDLE/openmpi/share/openmpi
export OPAL_SYSCONFDIR=$BUNDLE/openmpi/etc
export PMIX_PREFIX=$BUNDLE/pmix PMIX_LIBDIR=$BUNDLE/lib PMIX_PKGLIBDIR=$BUNDLE/pmix/lib/plugins
export PMIX_DATADIR=$BUNDLE/pmix/share PMIX_PKGDATADIR=$BUNDLE/pmix/share/pmix
export PMIX_SYSCONFDIR=$BUNDLE/pmix/etc PMIX_MCA_mca_base_component_path=$BUNDLE/pmix/lib/plugins
# One node: shared memory and TCP; no InfiniBand/UCX probing (their drivers are not carried).
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_osc=^ucx
EOF
{
  echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' + working tree')"
  echo "made $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), $(nvcc --version | tail -1)"
  echo "build $BUILD ($(cache CMAKE_BUILD_TYPE)), device code ${ARCHS% }"
  # The newest symbol version of PREFIX any carried file needs (lib/cxx aside), and which.
  needs() {
    local f
    for f in $(find "$OUT/bin" "$OUT/lib" "$OUT/openmpi" "$OUT/pmix" -type f ! -path '*/lib/cxx/*'); do
      objdump -T "$f" 2>/dev/null | grep -o "$1[0-9.]*" | sort -uV | tail -1 | sed "s|\$| ${f##*/}|"
    done | sort -V | tail -1
  }
  echo "host provides: glibc >= $(needs GLIBC_ | sed 's/GLIBC_\([0-9.]*\) \(.*\)/\1 (for \2)/')," \
       "libstdc++ with $(needs GLIBCXX_ | cut -d' ' -f1) (else lib/cxx is used), the NVIDIA driver," \
       "cuBLAS/cuBLASLt and NCCL for CUDA 13"
} > "$OUT/BUNDLE.txt"

# Files over 256 KiB travel xz-compressed (89 MiB become 30; OpenBLAS alone is 36 MiB, 5
# compressed): unpack.sh makes a runnable copy on the host first (gpu-run.sh calls it).
cp scripts/gpu-bundle-unpack.sh "$OUT/unpack.sh"
bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
unpacked=$(bytes "$OUT")
find "$OUT" -type f -size +256k -exec xz -6 -T "$JOBS" {} +
size=$(bytes "$OUT")
echo "gpu-bundle: $OUT: $(find "$OUT" -type f | wc -l) files, $(mib "$size") ($(mib "$unpacked") unpacked; compressed:" \
  "bin $(mib "$(bytes "$OUT/bin")"), $(ls "$OUT/lib" | wc -l) libraries $(mib "$(bytes "$OUT/lib")")," \
  "OpenMPI+PMIx $(mib $(($(bytes "$OUT/openmpi") + $(bytes "$OUT/pmix"))))), device code ${ARCHS% }"
if [ "$size" -gt $((LIMIT_MIB * 1048576)) ]; then
  echo "gpu-bundle: over the ${LIMIT_MIB} MiB limit (64 MiB travel with a device call)" >&2
  exit 1
fi
