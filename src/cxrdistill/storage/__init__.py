"""Low-level storage shared by every layer: atomic writes and tables (``io``), checkpoint files (``checkpoint``)
and the embedding store (``store``).

This package sits at the bottom of the architecture: it imports only ``cxrdistill.errors`` and third-party
libraries, so models, training, evaluation, teachers and the commands can all use it.
"""
