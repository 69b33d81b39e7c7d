"""Ray Tune and Ray Train adapters (needs the ``ray`` extra).

Not implemented yet: the next releases add warm-started Ray Tune searches and conversion on
Ray Train here. Nothing inside ``nas_warmstart`` imports this package.
"""
