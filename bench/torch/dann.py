"""PyTorch twin of the zoo's domain-adaptation networks (models/dann, models/ddc): DANN's MNIST
network (conv 5x5 32, pool, conv 5x5 48, pool, FC 100, FC 100, FC 10; domain head FC 100, FC 1
behind gradient reversal), DDC (the zoo's default `DdcConfig::mnist()`: a 64-unit adaptation
layer, multi-kernel Gaussian MMD on the conv features, 5 bandwidths a factor 2 apart around the
mean pairwise squared distance) and the source-only baseline; SGD momentum 0.9; 64 MNIST + 64 coloured images per step. One training
step = forward of both domains, losses, backward, SGD. Inference = classifying 500 images.
Prints one JSON line like bench/dann.rs.

    python bench/torch/dann.py --model dann|ddc|source-only --threads 2 [--iters 20] [--warmup 3]
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import load_digits, parse_args, report, timed_ms


class Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lam):
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.lam * g, None


class DigitNet(nn.Module):
    def __init__(self, adapt=None):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 5)
        self.conv2 = nn.Conv2d(32, 48, 5)
        layers = [nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU()]
        if adapt:
            layers += [nn.Linear(100, adapt), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(adapt or 100, 10)
        self.domain = nn.Sequential(nn.Linear(768, 100), nn.ReLU(), nn.Linear(100, 1))

    def features(self, x):
        x = x * 2 - 1
        h = F.relu(F.max_pool2d(self.conv1(x), 2))
        return F.relu(F.max_pool2d(self.conv2(h), 2)).flatten(1)


def multi_rbf_mmd2(s, t, kernels=5, multiplier=2.0):
    n = s.shape[0]
    pooled = torch.cat([s, t])
    sq = pooled.pow(2).sum(1, keepdim=True)
    d2 = F.relu(sq + sq.t() - 2 * pooled @ pooled.t())
    total = pooled.shape[0]
    base = (d2.sum().detach() / (total * total - total)).clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (base * multiplier ** (u - kernels // 2))) for u in range(kernels))
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def main():
    a = parse_args(model=dict(default="dann", choices=["dann", "ddc", "source-only"]))
    net = DigitNet(adapt=64 if a.model == "ddc" else None)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    digits, ys = load_digits(64)
    xs = digits.repeat(1, 3, 1, 1)
    # A coloured target batch: the digits over a fixed colour gradient (the timing does not
    # depend on the pixel values).
    background = torch.linspace(0, 1, 28 * 28 * 3).view(1, 3, 28, 28)
    xt = (background - xs).abs()
    domain_labels = torch.cat([torch.zeros(64), torch.ones(64)])

    def train_step():
        opt.zero_grad(set_to_none=True)
        fs = net.features(xs)
        es = net.hidden(fs)
        loss = F.cross_entropy(net.out(es), ys)
        if a.model == "dann":
            ft = net.features(xt)
            logits = net.domain(Reverse.apply(torch.cat([fs, ft]), 0.5)).squeeze(1)
            loss = loss + F.binary_cross_entropy_with_logits(logits, domain_labels)
        elif a.model == "ddc":
            loss = loss + 0.5 * multi_rbf_mmd2(fs, net.features(xt))
        loss.backward()
        opt.step()
        loss.item()

    train = timed_ms(train_step, a.warmup, a.iters)
    net.eval()
    big = xt.repeat(8, 1, 1, 1)[:500]
    with torch.no_grad():
        infer = timed_ms(lambda: net.out(net.hidden(net.features(big))).argmax(1).numpy(), a.warmup, a.iters)
    report(a.model, a, train, infer)


if __name__ == "__main__":
    main()
