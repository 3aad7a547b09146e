"""PyTorch's side of the GPU training comparison (issue 13): samples/s of
the models `cargo bench --bench training` trains (the MNIST example CNN
and the MLP 784-256-10; batch 128, Adam 1e-3, cross-entropy from logits,
accuracy computed every step), after 3 warm-up steps (more with
torch.compile, which compiles on the first), timed over at least 10 steps
and 2 seconds. Each step reads its loss back (`loss.item()`), as Keras'
`train_on_batch` and wgflow's bench do. Modes: eager and torch.compile, in
f32 (TF32 off) and with automatic mixed precision (f16 autocast and a
GradScaler). Prints one line per model and mode:
`<key> <mode> <samples/s>`.

    python3 benches/torch_training.py [cnn|mlp ...]
"""
import sys
import time

import torch
from torch import nn

dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(800, 10),
    )


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def rate(build, compiled, amp, batch=128):
    torch.manual_seed(1)
    model = build().to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    fwd = torch.compile(model) if compiled else model
    scaler = torch.amp.GradScaler(dev, enabled=amp)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((batch, 1, 28, 28), generator=g).to(dev)
    y = (torch.arange(batch) % 10).to(dev)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev, dtype=torch.float16, enabled=amp):
            logits = fwd(x)
            loss = loss_fn(logits.float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        acc = (logits.argmax(1) == y).float().mean()
        return loss.item(), acc

    for _ in range(10 if compiled else 3):
        step()
    steps, start = 0, time.perf_counter()
    while steps < 10 or time.perf_counter() - start < 2.0:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


print("torch", torch.__version__, torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", flush=True)
# Eager modes first: torch.compile spends most of the run compiling.
for compiled in (False, True):
    for key in sys.argv[1:] or ["cnn", "mlp"]:
        build = {"cnn": cnn, "mlp": mlp}[key]
        for amp in (False, True):
            mode = ("compile" if compiled else "eager") + ("+amp" if amp else "")
            print(key, mode, rate(build, compiled, amp), flush=True)
