"""The CenterPoint PTQ driver behind ``integration/centerpoint_ptq.py``, independent of the detection framework.

``options`` (command line and checks that need no framework), ``errors`` (``DriverError``), ``lock`` (one run per
work dir), ``distributed`` (torchrun set-up), ``calib_files`` (reusing calibration files and their metadata),
``results`` (the comparison table, results.md / results.json) and ``pipeline`` (the one mode loop over a
``integration.backends.base.Backend``).
"""
