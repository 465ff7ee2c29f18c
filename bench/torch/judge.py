"""PyTorch twin of the zoo's judge (crates/eval/src/judge): same layers, same batch sizes, same
real MNIST digits (data/mnist), Adam. Prints one JSON line like bench/judge.rs.

    python bench/torch/judge.py --threads 2 [--iters 20] [--warmup 3]
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import load_digits, parse_args, report, timed_ms


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


def main():
    a = parse_args()
    model = Judge()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = load_digits(64)
    xi, _ = load_digits(256)

    def train_step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(xt), yt)
        loss.backward()
        opt.step()
        loss.item()

    model.train()
    train = timed_ms(train_step, a.warmup, a.iters)
    model.eval()
    with torch.no_grad():
        infer = timed_ms(lambda: model(xi).numpy(), a.warmup, a.iters)
    report("judge", a, train, infer)


if __name__ == "__main__":
    main()
