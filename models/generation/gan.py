"""The GAN as a ``keras.Model`` whose ``train_step`` plays the min-max game.

The objective is the classic one of Goodfellow et al. (2014), as in the source
document::

    min_G max_D  E_x[log D(x)] + E_z[log(1 - D(G(z)))]

written with binary cross-entropy on the discriminator's logit:

- discriminator step: minimise ``BCE(1, D(x)) + BCE(0, D(G(z)))``, i.e. maximise
  the value above (real targets may be smoothed to e.g. 0.9, one-sided label
  smoothing, a standard stabiliser);
- generator step: the standard *non-saturating* form of the same game, minimise
  ``BCE(1, D(G(z))) = -E[log D(G(z))]`` instead of ``E[log(1 - D(G(z)))]``: same
  fixed point, but strong gradients early on when D easily rejects fakes.

Each batch does one discriminator update then one generator update (alternating,
fresh ``z`` for each), both with ``tf.GradientTape``. For a conditional GAN the
fakes use the real batch's labels. Optionally an exponential moving average of
the generator's weights (``ema_generator``, decay warmed up as ``(1+t)/(10+t)``) is
kept; its samples are steadier from epoch to epoch than the raw generator's, at
almost no training cost.

The class is made on first use (``gan_class()`` or ``models.generation.gan.GAN``)
so that importing this module does not import Keras.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def gan_class() -> type:
    """The registered ``GAN`` keras.Model subclass (imports Keras on the first call)."""
    from bucketvision.models.generation.gan_model import GAN

    return GAN


def __getattr__(name: str) -> Any:
    """``models.generation.gan.GAN`` builds the class on first access (imports Keras)."""
    if name == "GAN":
        return gan_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
