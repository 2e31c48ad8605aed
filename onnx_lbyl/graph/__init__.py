"""Graph surgery on ONNX models: finding prunable chains and rewriting their initializers.

This package knows ONNX and onnx-graphsurgeon but no mathematics: the coefficients it folds
come from onnx_lbyl.numerics.
"""
