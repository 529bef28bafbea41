"""Plain Adam (Kingma & Ba 2015) on one tensor, for the labs' small optimisations.

``torch.optim.Adam`` gives the same steps, but its first construction in a process imports
``torch._dynamo`` (about 3 s on an idle machine, over 10 s on a busy one), which was most of the
time the regularisation lab took to open.
"""

from __future__ import annotations

import torch


class Adam:
    """Adam on ``param`` (a leaf tensor with ``requires_grad``); :meth:`step` after ``backward()``.

    Same update and defaults as ``torch.optim.Adam(lr, betas=(0.9, 0.999), eps=1e-8)``, no weight decay.
    """

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        if not param.requires_grad:
            raise ValueError("param must require grad (a leaf tensor being optimised)")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.param, self.lr, self.eps = param, float(lr), float(eps)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.mean = torch.zeros_like(param)
        self.square = torch.zeros_like(param)
        self.steps = 0

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update from ``param.grad`` (bias-corrected first and second moments)."""
        grad = self.param.grad
        if grad is None:
            raise ValueError("no gradient: call loss.backward() before step()")
        self.steps += 1
        self.mean.lerp_(grad, 1 - self.beta1)
        self.square.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        correction1 = 1 - self.beta1**self.steps
        correction2 = 1 - self.beta2**self.steps
        denom = (self.square / correction2).sqrt_().add_(self.eps)
        self.param.addcdiv_(self.mean, denom, value=-self.lr / correction1)
