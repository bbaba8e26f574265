"""Pure decoders, one module per device family, and the values they share (devices/model.py).

Nothing here does I/O or reads a clock: each takes values and returns values.
"""

__all__ = [
    "barcode",
    "ble",
    "espresense",
    "health",
    "jsonfields",
    "model",
    "registry",
    "reorder",
    "status",
    "theengs",
    "wifi",
]
