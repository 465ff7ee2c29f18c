"""What the PyTorch twins of bench/ share: the bundled MNIST digits, the command line, timing."""
import argparse
import gzip
import json
import pathlib
import resource
import statistics
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load_digits(n):
    """The first n bundled MNIST training digits as [n, 1, 28, 28] floats in [0, 1], and their labels."""
    raw = gzip.open(ROOT / "data/mnist/train-10k-images-idx3-ubyte.gz").read()
    labels = gzip.open(ROOT / "data/mnist/train-10k-labels-idx1-ubyte.gz").read()
    x = np.frombuffer(raw, np.uint8, offset=16)[: n * 784].reshape(n, 1, 28, 28)
    y = np.frombuffer(labels, np.uint8, offset=8)[:n]
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.int64)


def parse_args(**extra):
    """--threads, --iters, --warmup and any extra options (name=dict of add_argument keywords);
    sets PyTorch's thread count and seed."""
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    for name, kw in extra.items():
        p.add_argument(f"--{name}", **kw)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    return a


def timed_ms(fn, warmup, iters):
    """Median wall time of fn() in milliseconds over iters calls after warmup calls."""
    times = []
    for i in range(warmup + iters):
        t = time.perf_counter()
        fn()
        if i >= warmup:
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def report(model, a, train_ms, infer_ms):
    """Prints the one JSON line bench/run.py reads."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"model": model, "threads": a.threads, "train_ms": train_ms, "infer_ms": infer_ms,
                      "peak_rss_mb": rss}))
