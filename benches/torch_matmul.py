"""PyTorch's matmul on the same GPU, timed the way `cargo bench --bench kernels`
times wgflow's (one product, then wait for it; median of 10), plus CUDA-event
timing of 20 back-to-back products. BENCHMARKS.md compares the two.

    python3 benches/torch_matmul.py
"""
import torch, time
print("torch", torch.__version__, torch.cuda.get_device_name(0))
def bench(n, dtype, tf32):
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    reps = 20
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        a @ b
    e.record()
    torch.cuda.synchronize()
    ms = s.elapsed_time(e) / reps
    # and timed like wgflow's bench: one product, then wait for it
    ts = []
    for _ in range(10):
        t = time.perf_counter(); a @ b; torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    ts.sort()
    print(f"torch matmul {n}^3 {str(dtype):14} tf32={tf32!s:5} {ms:8.3f} ms/product (events)  {2*n**3/ms/1e9:8.1f} TFLOP/s   synced median {ts[5]*1e3:8.3f} ms {2*n**3/ts[5]/1e12:8.1f} TFLOP/s")
for n in (1024, 2048, 4096):
    bench(n, torch.float32, False)
    bench(n, torch.float32, True)
    bench(n, torch.float16, False)
