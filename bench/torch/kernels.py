"""PyTorch twin of bench/kernels.rs: the same GEMM- and convolution-bound cases, forward + backward of
a sum, timed the same way (median over iterations after two warm-up calls).

    python bench/torch/kernels.py --threads 2 [--iters 10]

Prints one JSON line per case: {"case", "pytorch_ms"}; the case names are those of bench/kernels.rs.
"""
import json

import torch
import torch.nn.functional as F

from common import parse_args, timed_ms


def fwd_bwd(f, *leaves):
    """A closure running f() and the backward pass of its sum, clearing the leaves' gradients first
    (the Rust side builds a fresh gradient store each time)."""
    def step():
        for t in leaves:
            t.grad = None
        f().sum().backward()
    return step


def main():
    a = parse_args()
    iters = a.iters if a.iters != 20 else 10
    r = lambda *shape, grad=True: torch.randn(*shape).requires_grad_(grad)
    cases = []

    x, w = r(64, 64, 14, 14), r(128, 64, 3, 3)
    cases.append(("conv2d 64->128 b64 14x14 k3 fwd+bwd", fwd_bwd(lambda: F.conv2d(x, w, padding=1), x, w), iters))
    x1, w1 = r(64, 3, 28, 28, grad=False), r(32, 3, 5, 5)
    cases.append(("conv2d 3->32 b64 28x28 k5 fwd+bwd", fwd_bwd(lambda: F.conv2d(x1, w1), w1), iters * 3))
    x2, w2 = r(64, 32, 12, 12), r(48, 32, 5, 5)
    cases.append(("conv2d 32->48 b64 12x12 k5 fwd+bwd", fwd_bwd(lambda: F.conv2d(x2, w2), x2, w2), iters * 3))
    x3, w3 = r(64, 128, 7, 7), r(128, 64, 4, 4)
    cases.append(("conv_transpose2d 128->64 b64 7->14 k4s2 fwd+bwd",
                  fwd_bwd(lambda: F.conv_transpose2d(x3, w3, stride=2, padding=1), x3, w3), iters))
    x4, w4 = r(64, 64, 14, 14), r(128, 64, 4, 4)
    cases.append(("conv2d 64->128 b64 14->7 k4s2 fwd+bwd",
                  fwd_bwd(lambda: F.conv2d(x4, w4, stride=2, padding=1), x4, w4), iters))
    x5, w5, b5 = r(64, 1024), r(6272, 1024), r(6272)
    cases.append(("linear 1024->6272 b64 fwd+bwd", fwd_bwd(lambda: F.linear(x5, w5, b5), x5, w5, b5), iters))
    ma, mb = torch.randn(1024, 1024), torch.randn(1024, 1024)
    cases.append(("matmul 1024^3", lambda: torch.matmul(ma, mb), iters))

    for name, step, n in cases:
        print(json.dumps({"case": name, "pytorch_ms": timed_ms(step, 2, n)}))


if __name__ == "__main__":
    main()
