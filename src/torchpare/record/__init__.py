"""Recorders: capture module/function/method outputs and inputs, and parameters, during a forward."""
