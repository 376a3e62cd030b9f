"""A simulated AWS for the demo, the tests and the benchmark: moto on loopback with AWS Batch's
job side modelled as the real service behaves. Needs `jobguard[demo]`; the product never imports it."""

from .batch import BatchModel, Timing
from .seeder import Seeder
from .server import ACCOUNT, REGION, STOP_ACTIONS, SimulatedAWS

__all__ = ["ACCOUNT", "REGION", "STOP_ACTIONS", "BatchModel", "Seeder", "SimulatedAWS", "Timing"]
