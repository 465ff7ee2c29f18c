"""PyTorch twin of the zoo's judge (crates/eval/src/judge): same layers, same batch sizes, same
real MNIST digits (data/mnist), Adam. Prints one JSON line like bench/judge.rs.

    python bench/torch/judge.py --threads 2 [--iters 20] [--warmup 3]
"""
import argparse
import gzip
import json
import pathlib
import resource
import statistics
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[2]


class Judge(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 10)

    def features(self, x):
        x = (x - 0.1307) / 0.3081
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x):
        return self.fc2(F.dropout(self.features(x), 0.5, self.training))


def load_digits(n):
    raw = gzip.open(ROOT / "data/mnist/train-10k-images-idx3-ubyte.gz").read()
    labels = gzip.open(ROOT / "data/mnist/train-10k-labels-idx1-ubyte.gz").read()
    x = np.frombuffer(raw, np.uint8, offset=16)[: n * 784].reshape(n, 1, 28, 28)
    y = np.frombuffer(labels, np.uint8, offset=8)[:n]
    return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(y, dtype=torch.int64)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = Judge()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = load_digits(64)
    xi, _ = load_digits(256)

    train = []
    model.train()
    for i in range(a.warmup + a.iters):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        loss.item()
        if i >= a.warmup:
            train.append((time.perf_counter() - t) * 1e3)
    infer = []
    model.eval()
    with torch.no_grad():
        for i in range(a.warmup + a.iters):
            t = time.perf_counter()
            model(xi).numpy()
            if i >= a.warmup:
                infer.append((time.perf_counter() - t) * 1e3)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"model": "judge", "threads": a.threads, "train_ms": statistics.median(train),
                      "infer_ms": statistics.median(infer), "peak_rss_mb": rss}))


if __name__ == "__main__":
    main()
