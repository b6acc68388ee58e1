"""A LightGBM model text read without LightGBM: its header, and whether its trees are whole.

LightGBM trusts a model text's ``tree_sizes`` line to cut the text into trees.  A text cut
short (a truncated download, its checksum recomputed on import) makes it read past the
end, print thousands of ``[Fatal] Model format error`` lines and abort the whole process
(seen: ``terminate called without an active exception``), which in a mule means a
respawn loop.  So every model text is checked here, in plain Python, before LightGBM
parses it: the header, the feature names against the version's feature set, and every
tree block where ``tree_sizes`` says it is.  No LightGBM import: web workers use this too.
"""

from __future__ import annotations

from forecast.errors import CorruptVersion, IncompatibleVersion

_TREES_END = b"end of trees"


def header(text: str) -> dict[str, str]:
    """The ``key=value`` lines before the first tree; raises :class:`CorruptVersion` if it is not a model text."""
    lines = text.split("\n", 200)
    if lines[0].strip() != "tree":
        raise CorruptVersion("not a LightGBM model text (it does not start with 'tree')")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.startswith("Tree="):
            return fields
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value
    raise CorruptVersion("not a LightGBM model text (no tree after its header)")


def check_model_text(text: str, feature_names: tuple[str, ...]) -> None:
    """Raise unless ``text`` is a whole LightGBM model over exactly ``feature_names``.

    :class:`IncompatibleVersion`: its features are not the feature set's (names or count).
    :class:`CorruptVersion`: not a model text, or its trees are not where its header says.
    """
    fields = header(text)
    names = tuple(fields.get("feature_names", "").split())
    if names != feature_names:
        raise IncompatibleVersion(
            f"the model's {len(names)} features {' '.join(names) or '(none)'} are not the feature set's "
            f"{len(feature_names)}: {' '.join(feature_names)}"
        )
    if fields.get("max_feature_idx") != str(len(names) - 1):
        raise CorruptVersion(f"max_feature_idx={fields.get('max_feature_idx')} does not match its {len(names)} names")
    _check_trees(text.encode(), fields.get("tree_sizes"))


def _check_trees(data: bytes, tree_sizes: str | None) -> None:
    start = data.find(b"\nTree=0\n") + 1
    if tree_sizes is None:  # LightGBM then parses tree by tree, and finds the end itself
        if _TREES_END not in data[start:]:
            raise CorruptVersion("the model text is cut short (no 'end of trees')")
        return
    offset = start
    for index, size in enumerate(_sizes(tree_sizes)):
        if not data.startswith(b"Tree=%d\n" % index, offset):
            raise CorruptVersion(f"the model text is cut short or damaged: tree {index} is not where tree_sizes says")
        offset += size
    if not data.startswith(_TREES_END, offset):
        raise CorruptVersion("the model text is cut short or damaged: its trees do not end where tree_sizes says")


def _sizes(tree_sizes: str) -> list[int]:
    try:
        sizes = [int(size) for size in tree_sizes.split()]
    except ValueError:
        raise CorruptVersion("tree_sizes is not a list of numbers") from None
    if not sizes or min(sizes) <= 0:
        raise CorruptVersion("tree_sizes lists no trees")
    return sizes
