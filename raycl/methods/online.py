"""Online: plain SGD over the stream, one pass, the MER paper's name for fine-tuning (``sgd``)."""

from __future__ import annotations

from raycl.methods.sgd import Sgd


class Online(Sgd):
    name = "online"
