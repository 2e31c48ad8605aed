"""Channel groups: which channels of a graph can be removed together (a DepGraph over ONNX)."""
from .graph import Group, Read, ShapeEdit, Slot, analyse

__all__ = ["Group", "Read", "ShapeEdit", "Slot", "analyse"]
