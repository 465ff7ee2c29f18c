"""PyTorch twin of the zoo's conditional GANs (models/cgan): InfoGAN's MNIST networks (G: FC 1024,
FC 7x7x128, two stride-2 transposed convs, BatchNorm; D: conv 64, conv 128 + BN, FC 1024 + BN, a
logit head and an auxiliary head FC 128 + BN -> codes), InfoGAN's loss (batch 128, Adam G 1e-3,
D 2e-4, beta1 0.5) and AC-GAN's (batch 64, Adam 2e-4), the latter optionally with the MSGAN
mode-seeking term. One training step = generator forward, discriminator loss on the detached batch,
backward, Adam; generator loss through the updated discriminator, backward, Adam. Inference = 256
samples in eval mode. Prints one JSON line like bench/ebgan.rs.

    python bench/torch/cgan.py --model infogan|acgan|msgan --threads 2 [--iters 20] [--warmup 3]
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import load_digits, parse_args, report, timed_ms
from ebgan import Generator


class AuxD(nn.Module):
    def __init__(self, aux):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 64, 4, 2, 1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(64, 128, 4, 2, 1), nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
                                  nn.Flatten(), nn.Linear(128 * 7 * 7, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2))
        self.out = nn.Linear(1024, 1)
        self.q = nn.Sequential(nn.Linear(1024, 128), nn.BatchNorm1d(128), nn.LeakyReLU(0.2), nn.Linear(128, aux))

    def forward(self, x):
        h = self.body(x * 2 - 1)
        return self.out(h).squeeze(1), self.q(h)


def main():
    a = parse_args(model=dict(default="infogan", choices=["infogan", "acgan", "msgan"]))
    info = a.model == "infogan"
    batch = 128 if info else 64
    zdim = 74 if info else 72
    g = Generator(zdim)
    d = AuxD(12 if info else 10)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3 if info else 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    x, y = load_digits(batch)
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def latents(n=batch):
        noise = torch.rand(n, 62) * 2 - 1
        c = torch.randint(0, 10, (n,))
        parts = [noise, F.one_hot(c, 10).float()]
        if info:
            cont = torch.rand(n, 2) * 2 - 1
            parts.append(cont)
        else:
            cont = None
        return torch.cat(parts, 1), noise, c, cont

    def aux_loss(q, c, cont):
        if info:
            return F.cross_entropy(q[:, :10], c) + (0.5 * (q[:, 10:] - cont).pow(2).sum(1)).mean()
        return F.cross_entropy(q, c)

    def train_step():
        z, noise, c, cont = latents()
        fake = g(z)
        opt_d.zero_grad(set_to_none=True)
        lr_, qr = d(x)
        lf, qf = d(fake.detach())
        loss_d = F.binary_cross_entropy_with_logits(lr_, ones) + F.binary_cross_entropy_with_logits(lf, zeros)
        loss_d = loss_d + aux_loss(qf, c, cont) + (0 if info else F.cross_entropy(qr, y))
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad(set_to_none=True)
        lf, qf = d(fake)
        loss_g = F.binary_cross_entropy_with_logits(lf, ones) + aux_loss(qf, c, cont)
        if a.model == "msgan":
            noise2 = torch.rand(batch, 62) * 2 - 1
            fake2 = g(torch.cat([noise2, z[:, 62:]], 1))
            ratio = (fake2 - fake).abs().mean() / (noise2 - noise).abs().mean()
            loss_g = loss_g + 1.0 / (ratio + 1e-5)
        loss_g.backward()
        opt_g.step()
        loss_d.item(), loss_g.item()

    train = timed_ms(train_step, a.warmup, a.iters)
    g.eval()
    with torch.no_grad():
        infer = timed_ms(lambda: g(latents(256)[0]).numpy(), a.warmup, a.iters)
    report(a.model, a, train, infer)


if __name__ == "__main__":
    main()
