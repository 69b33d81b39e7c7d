"""Adapters that plug nas-warmstart into search frameworks.

* :mod:`nas_warmstart.integrations.optuna` — ``WarmStarter`` for your own objective, a
  ready-made NAS objective over a search space, a bookkeeping callback and a pool kept in
  Optuna's storage + artifact store.

Each adapter imports its framework only when it is imported itself, so ``import nas_warmstart``
stays light.
"""
