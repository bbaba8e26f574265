"""micropython-lib's ``umqtt`` on CPython (``umqtt.simple``), for the firmware stubs' tests."""
