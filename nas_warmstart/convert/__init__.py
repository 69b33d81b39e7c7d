"""Network-of-Theseus conversion of a trained network into a target architecture.

Not implemented yet: ``docs/conversion.md`` describes the algorithm the next release adds here.
"""
