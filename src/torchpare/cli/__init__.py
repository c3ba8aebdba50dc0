"""The ``torchpare`` command line."""
