"""The output store of ``bigdens predict`` (see :mod:`bigdens.store.creation` for its layout)."""

from __future__ import annotations

from .creation import *  # noqa: F401,F403
from .creation import (  # noqa: F401  (names used by other modules and tests)
    FRAME_COORDS, LEDGER, SHOWN, STORE_VERSION, TILE_ROWS, TILES, _check_values, _create_axis, _create_frame_coords,
    _create_tiles, _create_variable, _expected_metadata, _Frame, _jsonable, _metadata_differences, _quiet,
    _tile_layout, _verify_unit, _zarr, __all__, blocks_of, check_folder, check_tiles, frame_coordinates,
    ledger_file, new_attributes, old_format_error, open_tiles, read_ledger_entry, remove, repair_hint, repairable,
)
