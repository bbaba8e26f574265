"""The store's devices, for the demo, the recordings and the tests.

* ``store_sim.py`` and ``scenarios.py``: host simulators (CPython) publishing what a whole
  store's devices publish, deterministically, for ``lantern demo`` and the shipped recordings.
* ``micropython/``: firmware stubs flashed onto ESP32 boards (not imported here): a barcode
  scanner bridge and a consumables reporter, with the helper module they share.
"""
