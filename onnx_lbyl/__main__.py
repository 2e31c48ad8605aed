"""`python -m onnx_lbyl`: the console script."""
from onnx_lbyl.console import main

main()
