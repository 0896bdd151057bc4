"""The Lightning package, chosen the way Ray Train chooses it.

Ray's ``RayDDPStrategy`` and friends subclass ``lightning.pytorch`` when the unified ``lightning``
package is installed and ``pytorch_lightning`` otherwise; a module or Trainer from the other
package rejects them ("invalid strategy name"), so every microforge import of Lightning goes
through here.
"""

try:
    import lightning.pytorch as pl
except ModuleNotFoundError:
    import pytorch_lightning as pl

__all__ = ["pl"]
