#!/usr/bin/env bash
# The GPU checks of issue 13 for a session lent a GPU machine (the `device`
# tool: an NVIDIA H200 without Rust or the Vulkan loader), in two steps.
#
# Here (the development machine), once:
#     benches/gpu_session.sh prepare
# builds the release test, example and bench binaries the checks run,
# strips and packs them into .gpu/bin.tar.xz (ignored by git through
# .git/info/exclude) beside the Vulkan loader's Debian packages, and prints
# their size (the device tool carries at most 64 MiB).
#
# There, with `carry: [".gpu"]` and a timeout that leaves room for a rerun:
#     bash benches/gpu_session.sh run
# unpacks the loader and the binaries, then, most wanted first, each step
# cut to what is left of a time budget (WGFLOW_GPU_BUDGET seconds, 540 by
# default): the adapters and GEMM kernels, the matmul bench (each kernel
# forced at 4096^3 too) and PyTorch's (benches/torch_matmul.py), the
# convolution bench (f32 and f16, with each plan's times), eager
# elementwise ops and PyTorch's (benches/torch_elementwise.py), the
# conformance suite (every kernel against the CPU device, the cooperative
# ones forced where the adapter has them), the training bench in f32 and
# mixed precision and PyTorch's (benches/torch_training.py), the MNIST
# example in f32 and mixed precision, and the other GPU test suites.
# Everything also goes to $OUT/gpu.log.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
prepare)
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >>.git/info/exclude
    rm -rf .gpu && mkdir -p .gpu/bin
    # "name kind path" of each executable cargo builds.
    exes() {
        cargo "$@" --message-format=json | python3 -c '
import json, sys
for m in map(json.loads, sys.stdin):
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])'
    }
    {
        exes build --release --example devices --example train_mnist
        exes test --release --no-run --test conformance --test devices --test gradients \
            --test function --test training --test memory --test cross_check
        exes bench --no-run --bench kernels --bench training
    } >.gpu/exes
    while read -r name kind path; do
        case "$kind:$name" in
        example:devices) cp "$path" .gpu/bin/devices ;;
        test:devices) cp "$path" .gpu/bin/devices_test ;;
        test:training) cp "$path" .gpu/bin/training_test ;;
        bin:*) ;;
        *) cp "$path" ".gpu/bin/$name" ;;
        esac
    done <.gpu/exes
    rm .gpu/exes
    ls .gpu/bin
    strip .gpu/bin/*
    tar -C .gpu -cf - bin | xz -T2 -6 >.gpu/bin.tar.xz
    rm -rf .gpu/bin
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gpu && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    du -sh .gpu
    ;;
run)
    start=$SECONDS
    # Everything ends by this many seconds from here (the device tool's
    # call limit leaves time to read the results): each step gets what is
    # left, so the later ones are the ones cut.
    budget=${WGFLOW_GPU_BUDGET:-540}
    for f in .gpu/*.deb; do dpkg -x "$f" /; done
    ldconfig
    python3 -c "import tarfile; tarfile.open('.gpu/bin.tar.xz').extractall('.gpu', filter='fully_trusted')"
    if [ -d /usr/local/nvidia/share/vulkan/icd.d ]; then
        export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
        export __EGL_VENDOR_LIBRARY_FILENAMES=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
    fi
    log="${OUT:-/tmp}/gpu.log"
    export PYTHONUNBUFFERED=1 RUST_LOG=${RUST_LOG:-warn} WGFLOW_BENCH_DEVICES=gpu:0
    # step LIMIT CMD...: runs CMD for at most LIMIT seconds or what is
    # left of the budget; each step runs whatever the one before did.
    step() {
        local limit=$1
        shift
        local left=$((budget - (SECONDS - start)))
        [ "$left" -lt "$limit" ] && limit=$left
        if [ "$limit" -le 5 ]; then
            echo "== SKIPPED (out of time): $*"
            return
        fi
        echo "== [$((SECONDS - start)) s] $*"
        timeout "$limit" "$@" || echo "== FAILED (exit $?): $*"
    }
    b=.gpu/bin
    {
        date -u
        step 20 nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv
        step 30 $b/devices
        # Matmul: the default choice (autotuned; the bench prints every
        # candidate's time under each line, both builds of each) for f32
        # and f16, then the newest kernels and the previous defaults forced
        # at 4096^3 for the side-by-side ratios.
        step 60 env WGFLOW_BENCH_SIZES=1024,2048,4096 $b/kernels matmul
        for v in cooperative_staged wide_warp wide_double_warp cooperative_wide wide; do
            step 30 env WGFLOW_BENCH_SIZES=4096 WGFLOW_BENCH_GEMM=$v $b/kernels matmul
        done
        # The same built without wgpu's runtime checks.
        for v in cooperative_staged wide_warp; do
            step 30 env WGFLOW_BENCH_SIZES=4096 WGFLOW_BENCH_GEMM=$v WGFLOW_GEMM_CHECKS=off $b/kernels matmul
        done
        step 40 python3 benches/torch_matmul.py
        # The CNN layers in f32 and f16, each forward convolution's plan
        # (implicit GEMM against patch matrices on the matmul's kernels).
        step 40 $b/kernels conv2d
        # The GEMM kernels' conformance (each forced against the CPU
        # device) first, the rest of the suite later.
        step 90 $b/conformance matmul conv cooperative --test-threads=8
        # Eager elementwise ops (vec4 loads on GPUs) at the bench's 4M
        # elements and at 256M, where bandwidth, not launches, sets the
        # time; PyTorch's same ops beside them.
        step 30 $b/kernels eager
        step 40 env WGFLOW_BENCH_ELEMENTS=268435456 $b/kernels eager
        step 30 python3 benches/torch_elementwise.py
        step 30 python3 benches/torch_elementwise.py 268435456
        step 60 $b/training
        step 60 $b/training --mixed
        step 200 python3 benches/torch_training.py
        step 40 $b/train_mnist --epochs 3 --logdir /tmp/l1 --checkpoint-dir /tmp/c1
        step 40 $b/train_mnist --epochs 3 --mixed-precision --logdir /tmp/l2 --checkpoint-dir /tmp/c2
        step 120 $b/conformance --skip matmul --skip conv --skip cooperative --test-threads=8
        step 60 $b/devices_test --test-threads=4
        # The autotuner's choices and times for a matmul and a convolution.
        step 20 $b/devices_test --exact child_autotune --ignored --nocapture
        for t in gradients function training_test memory cross_check; do
            step 60 $b/$t --test-threads=8
        done
        step 20 $b/kernels
        echo "== [$((SECONDS - start)) s] done"
    } 2>&1 | tee "$log"
    ;;
*)
    echo "usage: $0 prepare|run" >&2
    exit 2
    ;;
esac
