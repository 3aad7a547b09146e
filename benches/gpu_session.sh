#!/usr/bin/env bash
# The GPU checks of issue 13 for a session lent a GPU machine (the `device`
# tool: an NVIDIA H200 without Rust or the Vulkan loader), in two steps.
#
# Here (the development machine), once:
#     benches/gpu_session.sh prepare
# builds the release test and bench binaries the checks run, strips them
# into .gpu/ (ignored by git through .git/info/exclude) with the Vulkan
# loader's Debian packages, and prints their size (the device tool carries
# at most 64 MiB).
#
# There, with `carry: [".gpu"]` and a timeout that leaves room for a rerun:
#     bash benches/gpu_session.sh run
# unpacks the loader, then prints the adapters and GEMM kernels, runs the
# conformance suite (every kernel against the CPU device, gemm_coop forced
# where the adapter has cooperative matrices), the matmul and training
# benches, and PyTorch's side (benches/torch_matmul.py,
# benches/torch_training.py). Everything also goes to $OUT/gpu.log.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/bin
    cargo build --release --example devices
    cargo test --release --test conformance --test devices --no-run
    cargo bench --bench kernels --bench training --no-run
    newest() { ls -t target/release/deps/"$1"-* | grep -v '\.d$' | head -1; }
    cp target/release/examples/devices .gpu/bin/devices
    cp "$(newest conformance)" .gpu/bin/conformance
    cp "$(newest devices)" .gpu/bin/devices_test
    cp "$(newest kernels)" .gpu/bin/kernels
    cp "$(newest training)" .gpu/bin/training
    strip .gpu/bin/*
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gpu && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    du -sh .gpu
    ;;
run)
    for f in .gpu/*.deb; do dpkg -x "$f" /; done
    ldconfig
    if [ -d /usr/local/nvidia/share/vulkan/icd.d ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    log="${OUT:-/tmp}/gpu.log"
    export PYTHONUNBUFFERED=1
    # Each step runs whatever the one before did.
    step() {
        echo "== $*"
        "$@" || echo "== FAILED (exit $?): $*"
    }
    {
        date -u
        step nvidia-smi --query-gpu=name,driver_version --format=csv
        step .gpu/bin/devices
        step .gpu/bin/conformance --test-threads=4
        step .gpu/bin/devices_test --test-threads=2
        # The autotuner's choices and times for a matmul and a convolution.
        step .gpu/bin/devices_test --exact child_autotune --ignored --nocapture
        step env WGFLOW_BENCH_SIZES=2048,4096 .gpu/bin/kernels matmul
        step env WGFLOW_BENCH_SIZES=4096 WGFLOW_BENCH_GEMM=tiled .gpu/bin/kernels matmul
        step .gpu/bin/training
        step python3 benches/torch_matmul.py
        step python3 benches/torch_training.py
    } 2>&1 | tee "$log"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
