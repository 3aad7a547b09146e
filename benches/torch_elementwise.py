"""PyTorch's eager elementwise ops on the same GPU, the cases and timing of
`cargo bench --bench kernels -- eager` (one op, then wait for it; median),
plus CUDA-event timing of 20 back-to-back ops, with GB/s of the bytes each
op must move. BENCHMARKS.md compares the two.

    python3 benches/torch_elementwise.py [ELEMENTS]   # default 4M, as the bench
"""
import sys, time
import torch

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1 << 22
print("torch", torch.__version__, torch.cuda.get_device_name(0), "elements", n)
x = torch.randn(n, device="cuda")
y = torch.randn(n, device="cuda")
m = torch.randn(n // 1024, 1024, device="cuda")
row = torch.randn(1024, device="cuda")
col = torch.randn(n // 1024, 1, device="cuda")
half = torch.tensor(0.5, device="cuda")
two = torch.tensor(2.0, device="cuda")
cases = [
    ("exp", 2, lambda: torch.exp(x)),
    ("mul, same shape", 3, lambda: x * y),
    ("mul, scalar", 2, lambda: x * half),
    ("maximum, scalar", 2, lambda: torch.maximum(x, half)),
    ("add, row broadcast", 2, lambda: m + row),
    ("add, column broadcast", 2, lambda: m + col),
    ("greater, same shape", 3, lambda: x > y),
    ("chain mul add exp max min (5 ops)", 12,
     lambda: torch.minimum(torch.maximum(torch.exp(x * y + x), half), two)),
]
for name, streams, f in cases:
    for _ in range(3):
        f()
    torch.cuda.synchronize()
    reps = 20
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(reps):
        f()
    e.record()
    torch.cuda.synchronize()
    ev = s.elapsed_time(e) / reps / 1e3
    ts = []
    for _ in range(11):
        t = time.perf_counter(); f(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
    ts.sort()
    med = ts[5]
    gb = 4 * streams * n / 1e9
    print(f"torch eager {name:36} synced median {med*1e3:9.3f} ms {gb/med:9.1f} GB/s   events {ev*1e3:9.3f} ms {gb/ev:9.1f} GB/s")
