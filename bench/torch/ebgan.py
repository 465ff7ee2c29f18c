"""PyTorch twin of the zoo's EBGAN and GAN baseline (models/ebgan, conv MNIST presets): the same
layers, batch 64, Adam (0.5, 0.999), real MNIST digits (data/mnist). One training step = generator
forward, discriminator loss on the detached batch, backward, Adam; generator loss through the
updated discriminator, backward, Adam. Inference = 256 samples in eval mode. Prints one JSON
line like bench/ebgan.rs.

    python bench/torch/ebgan.py --model ebgan|gan --threads 2 [--iters 20] [--warmup 3]
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import load_digits, parse_args, report, timed_ms


class Generator(nn.Module):
    def __init__(self, z=62):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(z, 1024), nn.BatchNorm1d(1024), nn.ReLU(),
                                nn.Linear(1024, 128 * 7 * 7), nn.BatchNorm1d(128 * 7 * 7), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.ReLU(),
                                nn.ConvTranspose2d(64, 1, 4, 2, 1), nn.Sigmoid())

    def forward(self, z):
        return self.up(self.fc(z).view(-1, 128, 7, 7))


class AutoencoderD(nn.Module):
    """depth 1: conv 1->64, 32-d code, convT 64->1 (the preset); depth 2: conv 1->64->128, 128-d
    code, convT 128->64->1 (the published ebgan-mnist); leaky ReLU 0.2 between, linear output."""

    def __init__(self, depth=1):
        super().__init__()
        self.depth = depth
        ch, side, code = (64, 14, 32) if depth == 1 else (128, 7, 128)
        self.inner = (ch, side)
        self.enc = nn.ModuleList([nn.Conv2d(1, 64, 4, 2, 1)] + ([nn.Conv2d(64, 128, 4, 2, 1)] if depth == 2 else []))
        self.code = nn.Linear(ch * side * side, code)
        self.dec_fc = nn.Linear(code, ch * side * side)
        self.dec = nn.ModuleList(([nn.ConvTranspose2d(128, 64, 4, 2, 1)] if depth == 2 else []) +
                                 [nn.ConvTranspose2d(64, 1, 4, 2, 1)])

    def forward(self, x):
        x = x * 2 - 1
        e = x
        for conv in self.enc:
            e = F.leaky_relu(conv(e), 0.2)
        code = self.code(e.flatten(1))
        d = F.leaky_relu(self.dec_fc(code), 0.2).view(-1, self.inner[0], self.inner[1], self.inner[1])
        for i, conv in enumerate(self.dec):
            d = conv(d)
            if i + 1 < len(self.dec):
                d = F.leaky_relu(d, 0.2)
        return ((d - x) ** 2).flatten(1).mean(1), code


def pulling_away(s):
    n = s.shape[0]
    u = s / s.norm(dim=1, keepdim=True)
    c = (u @ u.t()) ** 2
    return (c.sum() - c.diagonal().sum()) / (n * (n - 1))


class BinaryD(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                                 nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
                                 nn.Flatten(), nn.Linear(128 * 7 * 7, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))

    def forward(self, x):
        return self.net(x * 2 - 1).squeeze(1)


def main():
    a = parse_args(model=dict(default="ebgan", choices=["ebgan", "ebgan-d2", "gan"]))
    g = Generator()
    ebgan = a.model.startswith("ebgan")
    margin = 1.0 if a.model == "ebgan" else 0.5
    d = AutoencoderD(2 if a.model == "ebgan-d2" else 1) if ebgan else BinaryD()
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x, _ = load_digits(64)
    ones, zeros = torch.ones(64), torch.zeros(64)

    def train_step():
        fake = g(torch.rand(64, 62) * 2 - 1)
        opt_d.zero_grad(set_to_none=True)
        if ebgan:
            er, _ = d(x)
            ef, _ = d(fake.detach())
            loss_d = (er + F.relu(margin - ef)).mean()
        else:
            loss_d = F.binary_cross_entropy_with_logits(d(x), ones) + \
                F.binary_cross_entropy_with_logits(d(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        if ebgan:
            e, code = d(fake)
            loss_g = e.mean() + 0.1 * pulling_away(code)
        else:
            loss_g = F.binary_cross_entropy_with_logits(d(fake), ones)
        loss_g.backward()
        opt_g.step()
        loss_d.item(), loss_g.item()

    train = timed_ms(train_step, a.warmup, a.iters)
    g.eval()
    with torch.no_grad():
        infer = timed_ms(lambda: g(torch.rand(256, 62) * 2 - 1).numpy(), a.warmup, a.iters)
    report(a.model, a, train, infer)


if __name__ == "__main__":
    main()
