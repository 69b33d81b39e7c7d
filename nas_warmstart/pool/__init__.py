"""Pools of trained networks: :class:`~nas_warmstart.Pool` (ranking, filters and ``add`` checks),
:class:`~nas_warmstart.LocalPool` (a directory: SQLite index + safetensors files),
:class:`~nas_warmstart.ArchSpec` and builders (how an entry is rebuilt), stored networks and
weights I/O (never unpickling).
"""
