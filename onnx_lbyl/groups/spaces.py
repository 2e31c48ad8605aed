"""Channel index spaces and how they are tied together: union-find over *roots* that may be cut.

Every tensor with a channel axis gets a *layout*: the list of roots its channels come from, in
order (a Conv's output is one new root; a Concat's output is the concatenation of its inputs'
layouts). Two tensors whose channels must be removed together (the two inputs of a residual Add,
a feature map and its squeeze-excitation gate) have their layouts *unified*: root by root, the
same channel index means the same channel. A Split, a Slice or an Add against a Concat needs
boundaries inside a root; `unify` and `cut` then split the root (and every root tied to it) at
those offsets, which is always allowed: channels never cross a fixed boundary, so a root is the
concatenation of its parts everywhere it occurs.

At the end every class of tied leaf roots is one *channel group*: removing channel k of the group
removes channel k of each of its roots wherever they occur. Pure Python; no ONNX here.
"""
from __future__ import annotations

from dataclasses import dataclass, field

Layout = tuple[int, ...]


@dataclass
class ChannelSpaces:
    """Roots (by integer id), their sizes, their parts once cut, and the ties between leaves."""

    size: list[int] = field(default_factory=list)
    parts: dict[int, list[int]] = field(default_factory=dict)  # a cut root -> its parts, in order
    parent: list[int] = field(default_factory=list)  # union-find over leaves
    members: dict[int, list[int]] = field(default_factory=dict)  # class representative -> leaves
    fixed: dict[int, list[str]] = field(default_factory=dict)  # representative -> why it stays whole

    def new(self, size: int) -> int:
        """A fresh root of `size` channels, tied to nothing."""
        root = len(self.size)
        self.size.append(int(size))
        self.parent.append(root)
        self.members[root] = [root]
        return root

    def find(self, leaf: int) -> int:
        while self.parent[leaf] != leaf:
            self.parent[leaf] = self.parent[self.parent[leaf]]
            leaf = self.parent[leaf]
        return leaf

    def leaves(self, layout: Layout) -> list[int]:
        """The layout with every cut root replaced by its parts, recursively."""
        out: list[int] = []
        stack = list(reversed(layout))
        while stack:
            root = stack.pop()
            if root in self.parts:
                stack.extend(reversed(self.parts[root]))
            else:
                out.append(root)
        return out

    def width(self, layout: Layout) -> int:
        return sum(self.size[r] for r in layout)

    def fix(self, layout: Layout, reason: str) -> None:
        """Mark every channel of `layout` as staying whole, with `reason`."""
        for leaf in self.leaves(layout):
            reasons = self.fixed.setdefault(self.find(leaf), [])
            if reason not in reasons:
                reasons.append(reason)

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if ra > rb:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.members[ra].extend(self.members.pop(rb))
        if rb in self.fixed:
            for reason in self.fixed.pop(rb):
                if reason not in self.fixed.setdefault(ra, []):
                    self.fixed[ra].append(reason)

    def _cut_leaf(self, leaf: int, offsets: list[int]) -> None:
        """Cut `leaf` and every leaf tied to it at the same inner offsets, tying part to part."""
        cls = self.find(leaf)
        reasons = self.fixed.pop(cls, None)
        group = list(self.members.pop(cls))
        bounds = [0, *offsets, self.size[leaf]]
        new_parts: list[list[int]] = []
        for member in group:
            pieces = []
            for lo, hi in zip(bounds, bounds[1:]):
                piece = self.new(hi - lo)
                pieces.append(piece)
            self.parts[member] = pieces
            self.parent[member] = member  # a cut root is no longer a leaf; keep it inert
            new_parts.append(pieces)
        for pieces in new_parts[1:]:
            for a, b in zip(new_parts[0], pieces):
                self._union(a, b)
        if reasons:
            for piece in new_parts[0]:
                self.fixed.setdefault(self.find(piece), []).extend(reasons)

    def cut(self, layout: Layout, offsets: list[int]) -> None:
        """Make every offset in `offsets` (channel positions within `layout`) a leaf boundary."""
        for offset in sorted(set(offsets)):
            position = 0
            for leaf in self.leaves(layout):
                size = self.size[leaf]
                if position < offset < position + size:
                    self._cut_leaf(leaf, [offset - position])
                    break
                position += size

    def boundaries(self, layout: Layout) -> list[int]:
        """Inner leaf boundaries of `layout`, as channel positions."""
        out, position = [], 0
        for leaf in self.leaves(layout)[:-1]:
            position += self.size[leaf]
            out.append(position)
        return out

    def unify(self, a: Layout, b: Layout) -> bool:
        """Tie `a` and `b` channel by channel; False (and nothing tied) if their widths differ."""
        if self.width(a) != self.width(b):
            return False
        self.cut(a, self.boundaries(b))
        self.cut(b, self.boundaries(a))
        for x, y in zip(self.leaves(a), self.leaves(b)):
            self._union(x, y)
        return True

    def sub_layout(self, layout: Layout, start: int, stop: int) -> Layout:
        """The roots covering channels [start, stop) of `layout`, after cutting there."""
        self.cut(layout, [start, stop])
        out, position = [], 0
        for leaf in self.leaves(layout):
            if start <= position < stop:
                out.append(leaf)
            position += self.size[leaf]
        return tuple(out)

    def occurrences(self, layout: Layout) -> list[tuple[int, int, int]]:
        """(class representative, offset, size) of every leaf of `layout`, in order."""
        out, position = [], 0
        for leaf in self.leaves(layout):
            out.append((self.find(leaf), position, self.size[leaf]))
            position += self.size[leaf]
        return out

    def classes(self) -> list[int]:
        """Representatives of every class of leaves, in creation order."""
        return sorted(r for r in self.members if self.parent[r] == r and r not in self.parts)
