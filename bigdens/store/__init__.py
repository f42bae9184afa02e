"""The output store of ``bigdens predict``: a Zarr v3 group read by ``xarray.open_zarr``.

Layout (DESIGN §6)::

    OUT.zarr/
      zarr.json                 group attributes (cell, grid, model, run, ``complete``, ...)
      density/                  float32 (n1, n2, n3), dims ("x", "y", "z"), e/Å³, fill NaN
      density_std_epistemic/    float32, same shape and chunks
      density_std_aleatoric/
      density_std/              total σ = sqrt(σ_epi² + σ_ale²)
      x/, y/, z/                float64 coordinates, i·|a_i|/n_i, Å
      positions/                float64 (n_atoms, 3), dims ("atom", "xyz"), Å
      numbers/                  int32 (n_atoms,), dims ("atom",)
      charge/, charge_std/      float64 (n_atoms,), dims ("atom",), e: per-atom charges (written on completion)
      atom_tiles/               the atoms again, sorted by the block they lie in (bigdens.atomtiles), so that a
                                worker reads only the atoms near its blocks:
        frac/                   float64 (n_atoms, 3), wrapped fractional coordinates, in tile order
        numbers/                uint8 (n_atoms,), atomic numbers, in tile order
        atom/                   int64 (n_atoms,), each row's index along ``atom``
        starts/                 int64 (n_blocks + 1,), tile t is rows starts[t]:starts[t + 1]
      ledger/                   a Zarr group holding one ``block-NNNNNNN.json`` per finished block, and
                                ``charges-NNNNNNN.npy``: the block's per-atom sums (:mod:`bigdens.charges`)

A trajectory store (``bigdens predict TRAJ --frames START:STOP:STEP``; attribute ``n_frames``) has a
leading ``frame`` dimension: the density variables are (n_frames, n1, n2, n3) with chunks (1, c1, c2,
c3), ``positions`` (n_frames, n_atoms, 3), ``charge``/``charge_std`` (n_frames, n_atoms), and each
``atom_tiles`` array a leading frame axis (each frame sorted on its own); ``numbers``
and the cell are shared by all frames.  Coordinates along ``frame``: ``frame`` (int64, each frame's
index in the input file), and ``time`` and ``step`` when every frame carried them.  Its work units
are (frame, block) pairs, numbered ``frame · n_blocks + block`` (:func:`unit_index`): the ledger's
``block-NNNNNNN.json`` and ``charges-NNNNNNN.npy`` carry that number, and each entry also records
its ``frame`` and ``block``.  A single structure's store has no frame dimension and its units are
its blocks.

The ledger is the truth about which blocks are done: a block's entry is
written (temporary file + rename, so it is never half written) only after
all four variables of the block are written, read back and checksummed.  An
entry holds the checksums of the block's arrays, its raw electron sum, its
largest total and epistemic σ and how many of its points exceed the model's
epistemic threshold (summed into the attributes ``n_epistemic_high`` and
``epistemic_threshold`` when the run completes), so ``--resume`` recomputes exactly the missing blocks and
:func:`verify` can tell missing and corrupt chunks apart.  Unwritten regions
read NaN (the fill value), never 0.  ``complete`` is true only after every
block has its entry.

Blocks are boxes of whole chunks, so concurrent writers never share a chunk
file; zarr writes each chunk file atomically.  One run writes a store at a
time: its driver holds ``OUT.zarr.lock`` beside the store
(:mod:`bigdens.storelock`), and every block and ledger write first checks the
store's ``run_id``.

Readers never trust the store blindly: ``bigdens export`` and ``bigdens plot``
read through :class:`BlockReader`, which checks each block they read against
its ledger checksum, after :func:`check_metadata` has compared every array's
metadata, the coordinates and the atoms with what :func:`create` wrote.  Any
damage stops them with one line naming it and the repair (``bigdens verify
--repair``, then ``bigdens predict ... --resume``).

The package's modules: :mod:`~bigdens.store.layout` (format, variables, array layouts, hashes),
:mod:`~bigdens.store.target` (the output path), :mod:`~bigdens.store.creation` (creating and opening),
:mod:`~bigdens.store.ledger` (the ledger, block and charge writes), :mod:`~bigdens.store.damage` (the
errors that name damage and its repair), :mod:`~bigdens.store.metadata` (checks outside the blocks'
data, and repair), :mod:`~bigdens.store.reader` (checked reading) and :mod:`~bigdens.store.verification`
(``bigdens verify``).  Every name is also importable from :mod:`bigdens.store` itself.
"""

from __future__ import annotations

from .creation import (_create_axis, _create_frame_coords, _create_tiles, _create_variable, create, new_attributes,
                       old_format_error, open_tiles, open_variables, update_attrs)
from .damage import SHOWN, damage_error, problems_error, repair_hint, repairable
from .layout import (CHARGE_UNITS, CHARGE_VARIABLES, DENSITY_UNITS, FRAME_COORDS, LEDGER, STORE_FORMAT, STORE_VERSION,
                     TILE_ROWS, TILES, VARIABLES, _Frame, _jsonable, _quiet, _tile_layout, _zarr, blocks_of, checksum,
                     frame_coordinates, n_frames, read_attrs, require_attrs, structure_hash, structure_hash_chunks, trajectory_hash,
                     WorkUnits, unit_index, variable_layout)
from .ledger import (LedgerEntry, charges_file, ledger_file, read_block_charges, read_ledger, read_ledger_entry, write_block,
                     write_block_charges, write_charges, write_ledger)
from .metadata import (_check_values, _expected_metadata, _metadata_differences, check_metadata, check_tiles,
                       repair_metadata)
from .reader import BlockReader, CheckedSlabs, check_frame, open_checked
from .target import check_folder, check_identity, check_target, remove
from .verification import VerifyReport, damaged_units, frame_electrons, verify

__all__ = ["BlockReader", "LedgerEntry", "WorkUnits", "CHARGE_UNITS", "CHARGE_VARIABLES", "CheckedSlabs", "DENSITY_UNITS", "STORE_FORMAT",
           "VARIABLES", "VerifyReport", "charges_file", "check_frame", "check_identity", "check_metadata",
           "check_target", "checksum", "create", "damage_error", "damaged_units", "frame_electrons", "n_frames", "open_checked", "open_variables",
           "problems_error", "read_attrs", "read_block_charges", "require_attrs", "read_ledger", "repair_metadata", "structure_hash",
           "structure_hash_chunks", "trajectory_hash", "unit_index", "update_attrs", "variable_layout", "verify",
           "write_block", "write_block_charges", "write_charges", "write_ledger"]
