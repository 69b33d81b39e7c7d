"""Training: data sets (a registry of loaders), ``fit`` with a loss-term hook (guidance and
conversion plug in the same way), ``evaluate`` and BatchNorm recalibration, and the guidance loss.
"""
