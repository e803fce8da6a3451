"""skipvsr: cheaper video super-resolution by adaptive patch routing (SkipVSR on BasicVSR)."""

from skipvsr.api import Upscaler, UpscaleStats, load
from skipvsr.backbone import BasicVSR
from skipvsr.routing import Route

__all__ = ["BasicVSR", "Route", "UpscaleStats", "Upscaler", "load"]
__version__ = "0.1.0"
