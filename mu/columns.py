"""Integer columns (`array`s) in JSON: base64 of their little-endian bytes.

A million-entry column is a few megabytes that load with one decode and no Python integer
objects, which is what lets a store of a million messages start in seconds.
"""

import base64
import sys
from array import array


def encode_column(column: array) -> dict:
    if sys.byteorder != "little":
        column = array(column.typecode, column)
        column.byteswap()
    return {"type": column.typecode, "b64": base64.b64encode(column.tobytes()).decode("ascii")}


def decode_column(data: dict) -> array:
    column = array(data["type"])
    column.frombytes(base64.b64decode(data["b64"]))
    if sys.byteorder != "little":
        column.byteswap()
    return column
