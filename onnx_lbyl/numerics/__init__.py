"""The mathematics of pruning and restoration, in NumPy/SciPy only.

Nothing in this package imports onnx: every function takes and returns arrays, so the
formulas of MATH.md can be read and tested without a graph.
"""
