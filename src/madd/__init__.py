"""madd: small-sample, cross-domain industrial defect detection with Lightning + Hydra."""

__version__ = "0.1.0"
