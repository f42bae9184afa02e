"""The bad-input catalogue (docs/bad-inputs.md): every bad input ends in one clear line, exit 2, no writes.

Each case runs ``bigdens.cli.main(argv)`` in-process, in a folder holding the
small inputs that :func:`inputs` builds (file names as in the catalogue), and
checks: exit status 2; exactly one stderr line, ``bigdens CMD: error: MESSAGE``,
(a structure outside the model's domain: exit 3 and ``bigdens predict: out of
domain: MESSAGE``), equal to the catalogued message (``…`` stands for any text: temporary paths,
lists that change with the installation); nothing on stdout, no traceback; and
no file created, changed or removed.

The table in docs/bad-inputs.md is generated from :data:`CASES`; after editing
them, rewrite it with ``.venv/bin/python tests/test_bad_inputs.py``
(:func:`test_catalogue_matches_the_cases` fails until then).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad-inputs.md"
AL4 = Path(__file__).resolve().parent / "data" / "al4"
QE = Path(__file__).resolve().parent / "data" / "qe"
BEGIN = "<!-- cases: generated from tests/test_bad_inputs.py (run it to rewrite); do not edit by hand -->"
END = "<!-- end of cases -->"


@dataclass(frozen=True)
class Case:
    """One bad input: ``bigdens ARGV`` must fail with ``bigdens ARGV[0]: error: MESSAGE``."""

    id: str
    what: str
    argv: tuple[str, ...]
    message: str
    #: Skip where this input is not bad (``--device cuda`` on a machine with a GPU).
    skip_with_cuda: bool = False
    #: Exit status: 2 (bad input), or 3 (outside the model's domain, ``bigdens predict``).
    status: int = 2

    @property
    def command(self) -> str:
        return self.argv[0]

    @property
    def prefix(self) -> str:
        """What the stderr line starts with, before the message."""
        return f"bigdens {self.command}: " + ("out of domain: " if self.status == 3 else "error: ")


def case(id: str, what: str, cmdline: str, message: str, **kw) -> Case:
    return Case(id, what, tuple(shlex.split(cmdline)), message, **kw)


#: A predict run that would work: 4×4×4 grid, one block, in this process.
PREDICT = "--model al.safetensors --grid 4 4 4 --block 4 --mc-samples 1 --workers 0 --out new.zarr"
#: The same without a grid choice.
PREDICT_NOGRID = "--model al.safetensors --block 4 --mc-samples 1 --workers 0 --out new.zarr"
#: suggest with a calibrated model, one candidate, costs from the al4 data set, in this process.
SUGGEST = "shipped-al.safetensors al.xyz --workers 0 --cost-data al4"
#: learn's pool, calibration split and costs (hold-out and budget per case).
LEARN = "--candidates al.xyz --val al4/al4-T0300-01.npz --cost-data al4 --workers 0 -o new.safetensors"
#: A predict run with the shipped Al model (its domain reference), in this process.
PREDICT_SHIPPED = "--model shipped-al.safetensors --mc-samples 1 --workers 0 --out new.zarr"
#: What every refusal before a run ends with.
NOTHING_COMPUTED = ("; nothing was computed: check the structure and its units, or pass --allow-out-of-domain to "
                    "predict it anyway")
#: The per-atom nearest-neighbour limits of the shipped Al model.
AL_NN = ("2 atom(s) have their nearest neighbour outside 1.49–3.57 Å (the training cells' 2.17–2.85 Å widened by "
         "their spread or ±25 %): ")
#: The settings that made done.zarr (see `inputs`).
STORE = "--model al.safetensors --grid 4 4 4 --block 4 --mc-samples 1 --workers 0"

GROUPS: dict[str, list[Case]] = {
    "Structures": [
        case("structure-empty-file", "empty structure file", "describe empty.xyz",
             "structure file 'empty.xyz' is empty (0 bytes)"),
        case("structure-no-line-break", "a 1 MiB text file without a line break (ASE would read it whole)",
             "predict oneline.xyz " + PREDICT,
             "structure file 'oneline.xyz' cannot be a 'extxyz' file: its first 1 MiB holds no line break; give a "
             "structure file (or name its format with --format)"),
        case("structure-unreadable", "text that is not XYZ", "describe garbage.xyz",
             "structure file 'garbage.xyz' is damaged: it does not parse as 'extxyz' (XYZError: …); check or "
             "rewrite the file"),
        case("structure-unknown-extension", "a suffix ASE does not know", "predict al.weird " + PREDICT,
             "cannot tell the format of structure file 'al.weird' (ASE knows no format 'weird' for its name); "
             "name it with --format, e.g. --format lammps-data"),
        case("structure-damaged-poscar", "a POSCAR cut after its lattice vectors", "predict POSCAR " + PREDICT,
             "structure file 'POSCAR' is damaged: it does not parse as 'vasp' (…); check or rewrite the file"),
        case("structure-generic-suffix", "a LAMMPS data file named al.data (ASE guesses runnerdata)",
             "describe al.data",
             "structure file 'al.data' holds no structure that ASE's 'runnerdata' reader finds; name the format "
             "with --format, e.g. --format lammps-data"),
        case("structure-wrong-format", "--format vasp for an extxyz file", "describe al.xyz --format vasp",
             "cannot read structure file 'al.xyz' as --format 'vasp' (…); the file is damaged or not in that "
             "format"),
        case("structure-format-unknown", "--format nosuch", "predict al.xyz --format nosuch " + PREDICT,
             "--format 'nosuch' is not a format ASE reads; e.g. extxyz, vasp, cif, lammps-data (`ase info "
             "--formats` lists them)"),
        case("structure-directory", "a folder as structure file", "describe notes",
             "structure file 'notes' is a directory; give a structure file (extxyz, POSCAR, CIF, ...)"),
        case("structure-missing", "structure file that does not exist", "predict missing.xyz " + PREDICT,
             "structure file 'missing.xyz' does not exist"),
        case("structure-no-atoms", "periodic cell with 0 atoms", "describe zero.xyz",
             "the structure is empty (0 atoms)"),
        case("structure-nan-position", "a NaN position", "predict nan.xyz " + PREDICT,
             "1 atom(s) have NaN or infinite positions (first: atom 1)"),
        case("structure-atoms-too-close", "two atoms 0.3 Å apart", "predict close.xyz " + PREDICT,
             "atom 0 is 0.300 Å from atom 1 (minimum allowed 0.5 Å); check the cell and the position units (Å)"),
        case("structure-not-periodic", "pbc=False", "predict nopbc.xyz " + PREDICT,
             "the structure must be periodic in all three directions, got pbc=[False, False, False]; put a "
             "molecule or slab in a box with vacuum and set atoms.pbc = True"),
        case("structure-far-atom", "an atom 10^17 Å away (unwrapped beyond any sense; float64 loses its place in "
             "the cell)", "predict far.xyz " + PREDICT,
             "1 atom(s) lie more than 1e+06 cell lengths from the cell (first: atom 2, 1e+17 Å from the origin, "
             "2.47e+16 cell lengths): float64 cannot place them within the cell; check the positions and their "
             "units, or wrap them into the cell"),
        case("structure-singular-cell", "two equal lattice vectors", "describe singular.xyz",
             "the cell is singular (volume 0 Å³, lattice vectors [[4.05, 0.0, 0.0], [0.0, 4.05, 0.0], "
             "[4.05, 0.0, 0.0]]); give three linearly independent lattice vectors"),
    ],
    "Outside the model's domain (predict: exit 3, nothing computed; --allow-out-of-domain predicts anyway)": [
        case("domain-atoms-too-close", "a 108-atom Al cell with two atoms 0.6 Å apart (above the 0.5 Å minimum)",
             "predict pair.xyz " + PREDICT_SHIPPED, AL_NN + "atoms 0 and 1 are 0.600 Å apart" + NOTHING_COMPUTED,
             status=3),
        case("domain-interstitial", "the 108-atom cell with an interstitial 0.55 Å from atom 0",
             "predict interstitial.xyz " + PREDICT_SHIPPED,
             AL_NN + "atoms 0 and 108 are 0.550 Å apart" + NOTHING_COMPUTED, status=3),
        case("domain-trajectory-frame", "a 5-frame trajectory of the 108-atom cell whose frame 3 has two atoms "
             "0.6 Å apart", "predict md108.xyz --frames 0:5 " + PREDICT_SHIPPED,
             "frame 3: " + AL_NN + "atoms 0 and 1 are 0.600 Å apart" + NOTHING_COMPUTED, status=3),
    ],
    "Descriptor settings (bigdens describe)": [
        case("describe-m-zero", "--m 0 (not the default)", "describe al.xyz --grid 4 4 4 --m 0",
             "each radial count M must be within 1..256, got m=(0,)"),
        case("describe-m-too-large", "--m 1000", "describe al.xyz --grid 4 4 4 --m 1000",
             "each radial count M must be within 1..256, got m=(1000,)"),
        case("describe-k-negative", "--k -1", "describe al.xyz --grid 4 4 4 --k -1",
             "each angular count K must be within 0..16, got k=(-1,)"),
        case("describe-r-cut-zero", "--r-cut 0", "describe al.xyz --grid 4 4 4 --r-cut 0",
             "r_cut must be a positive number of Å, got 0.0"),
        case("describe-r-cut-nan", "--r-cut nan", "describe al.xyz --grid 4 4 4 --r-cut nan",
             "r_cut must be a positive number of Å, got nan"),
        case("describe-max-blocks-zero", "--max-blocks 0 (not all blocks)", "describe al.xyz --grid 4 4 4 "
             "--max-blocks 0", "--max-blocks must be >= 1 (blocks to compute), got 0"),
        case("describe-block-zero", "--block 0", "describe al.xyz --grid 4 4 4 --block 0",
             "block edge must be a positive number of grid points, got 0"),
    ],
    "Grids": [
        case("grid-spacing-zero", "zero spacing", "describe al.xyz --spacing 0",
             "grid spacing must be a positive number of Å, got 0.0"),
        case("grid-spacing-negative", "negative spacing", "predict al.xyz --spacing -0.1 " + PREDICT_NOGRID,
             "grid spacing must be a positive number of Å, got -0.1; e.g. spacing=0.2"),
        case("grid-spacing-nan", "NaN spacing", "predict al.xyz --spacing nan " + PREDICT_NOGRID,
             "grid spacing must be a positive number of Å, got nan; e.g. spacing=0.2"),
        case("grid-shape-zero", "a grid with a zero", "predict al.xyz --grid 0 4 4 " + PREDICT_NOGRID,
             "grid must be a positive integer or three of them (grid points), got (0, 4, 4); e.g. grid=64"),
        case("grid-shape-negative", "a grid with a negative size", "describe al.xyz --grid 4 -1 4",
             "grid shape must be three positive integers, got (4, -1, 4)"),
    ],
    "Models": [
        case("model-not-a-model", "a text file as model", "predict al.xyz " + PREDICT.replace(
             "al.safetensors", "notmodel.safetensors"),
             "'notmodel.safetensors' is not a readable bigdens model file: bigdens models are .safetensors "
             "files written by `bigdens train` (safetensors: Error while deserializing header: …)"),
        case("model-truncated", "the first 200 bytes of a model", "predict al.xyz " + PREDICT.replace(
             "al.safetensors", "truncated.safetensors"),
             "'truncated.safetensors' is not a readable bigdens model file: bigdens models are .safetensors "
             "files written by `bigdens train` (safetensors: Error while deserializing header: …)"),
        case("model-pickle", "a pickle file as model", "evaluate model.pkl al4",
             "'model.pkl' is not a readable bigdens model file (it looks like a pickle/torch.save file, which "
             "bigdens never loads): bigdens models are .safetensors files written by `bigdens train` "
             "(safetensors: Error while deserializing header: …)"),
        case("model-folder", "a folder as model", "predict al.xyz " + PREDICT.replace("al.safetensors", "al4"),
             "model 'al4' is a folder; give the model file (.safetensors) written by `bigdens train`"),
        case("model-damaged", "a model file one bit off the sha256 its folder's SHA256SUMS records",
             "predict al.xyz " + PREDICT.replace("al.safetensors", "damaged/al.safetensors"),
             "model file 'damaged/al.safetensors' is damaged or was replaced: its sha256 is …, but "
             "'…/damaged/SHA256SUMS' records … for it; reinstall bigdens (pip install "
             "--force-reinstall bigdens) for a shipped model, or give another --model"),
        case("model-missing", "model file that does not exist", "predict al.xyz " + PREDICT.replace(
             "al.safetensors", "missing.safetensors"),
             "model file 'missing.safetensors' does not exist"),
        case("model-not-bigdens", "safetensors without bigdens metadata", "predict al.xyz " + PREDICT.replace(
             "al.safetensors", "plain.safetensors"),
             "'plain.safetensors' is a safetensors file but not a bigdens model (no 'bigdens' metadata)"),
        case("model-inconsistent", "descriptor metadata that does not fit the weights",
             "evaluate badmeta.safetensors al4",
             "'badmeta.safetensors' has inconsistent bigdens metadata or weights (ValueError: feature scaling "
             "does not match the descriptor size)"),
        case("model-nan-weights", "a NaN weight", "finetune nanweights.safetensors al4 -o ft.safetensors",
             "'nanweights.safetensors' holds non-finite weights in …"),
        case("model-flipped-bit", "one flipped exponent bit in a trunk weight (a model saved with its tensor digest)",
             "predict al.xyz --model flipped.safetensors --grid 4 4 4 --block 4 --mc-samples 1 --workers 0 "
             "--out new.zarr",
             "'flipped.safetensors' is damaged: its weights do not match the digest written with them (a changed "
             "bit); train or copy the model again"),
        case("model-transposed-tensor", "a weight matrix stored transposed",
             "finetune transposed.safetensors al4 -o ft.safetensors",
             "'transposed.safetensors' does not hold the weights its metadata describes (misshapen …); train or "
             "copy the model again"),
        case("model-missing-tensor", "a tensor left out of the file",
             "calibrate missing-tensor.safetensors al4 -o cal.safetensors",
             "'missing-tensor.safetensors' does not hold the weights its metadata describes (missing …); train or "
             "copy the model again"),
        case("model-newer-format", "model format from a newer bigdens", "predict al.xyz " + PREDICT.replace(
             "al.safetensors", "newer.safetensors"),
             "'newer.safetensors' was written by bigdens 99.0 in model format 99; this bigdens (…) reads "
             "format … at most: upgrade bigdens"),
        case("model-other-species", "an Si model for an Al structure", "predict al.xyz " + PREDICT.replace(
             "al.safetensors", "si.safetensors"),
             "the structure holds species ['Al'] that the descriptor parameters do not know (known: ['Si']); "
             "use a model trained for these elements"),
        case("model-none-shipped", "no --model, and no shipped model for Pu",
             "predict pu.xyz --grid 4 4 4 --workers 0 --out new.zarr",
             "no shipped model covers the species ['Pu'] (shipped: …); train one with `bigdens train` and "
             "pass it with --model"),
        case("model-finetune-layers", "more layers than the model has",
             "finetune al.safetensors al4 -o ft.safetensors --layers 9",
             "--layers must be within 1..3 for this model, got 9"),
    ],
    "Data sets": [
        case("data-empty", "a data set with no snapshots", "train empty-ds -o m.safetensors",
             "no snapshots in ['empty-ds']: the data sets are empty"),
        case("data-nan-density", "a NaN in a density", "train nan-ds -o m.safetensors",
             "snapshot 'al4-T0300-00': the density holds 1 NaN or infinite value(s); the DFT run or the file is "
             "broken: regenerate or drop this snapshot"),
        case("data-species-mismatch", "Al data, Si model", "evaluate si.safetensors al4",
             "snapshot 'al4-T0300-00' holds ['Al'], which the model's species ['Si'] do not include"),
        case("data-species-option", "--species without the data's species", "train al4 --species Si -o m.safetensors",
             "snapshot 'al4-T0300-00' holds ['Al'], which the model's species ['Si'] do not include"),
        case("data-descriptor-params", "--m with two values for one species", "train al4 --m 8 8 -o m.safetensors",
             "--m takes one value or one per species (1), got [8, 8]"),
        case("data-no-manifest", "a folder that is not a data set", "train notes -o m.safetensors",
             "'notes' is not a bigdens data set (no dataset.json in it)"),
        case("data-damaged-manifest", "dataset.json that is not JSON", "data info damaged-ds",
             "cannot read 'damaged-ds/dataset.json' (Expecting property name enclosed in double quotes: line 1 "
             "column 2 (char 1)); the manifest is damaged"),
        case("data-truncated-snapshot", "a truncated snapshot .npz", "evaluate al.safetensors truncated-ds",
             "cannot read snapshot 'truncated-ds/al4-T0300-00.npz' (BadZipFile: File is not a zip file); the file "
             "is damaged"),
        case("data-missing", "data path that does not exist", "evaluate al.safetensors missing-ds",
             "'missing-ds' does not exist (expected a data-set directory or a density file)"),
        case("data-no-such-split", "a split the data set does not have", "evaluate al.safetensors al4 --split test",
             "no snapshots of split 'test' in ['al4']"),
        case("data-val-overlap", "a training snapshot also given as --val",
             "train al4 --val al4/al4-T0300-00.npz -o m.safetensors",
             "snapshot(s) al4-T0300-00 are in both the training data and --val: a model validated on what it "
             "trains on stops and calibrates on its own training error; leave them out of one of the two"),
        case("data-val-no-validation-split", "--val with a data set that has no validation split",
             "train al4 --val trainonly-ds -o m.safetensors",
             "--val trainonly-ds: the data set has no 'validation' split; name the snapshot files (.npz) to "
             "validate on instead"),
        case("calibrate-test-cell-by-path", "calibrating on a test cell named by path (its split is in its data set's "
             "dataset.json)", "calibrate al.safetensors al4-test/al4-T0900-01.npz -o cal.safetensors",
             "snapshot al4-T0900-01 is in the test split: calibrate on validation snapshots, never on test data (e.g. "
             "a data set with --split validation)"),
        case("calibrate-renamed-test-cell", "calibrating on a renamed copy of a shipped test cell, in another folder, "
             "labelled validation", "calibrate al.safetensors mine.npz --split validation -o cal.safetensors",
             "snapshot mine (= al32/al32-T0300-01) is a copy of a test cell shipped in datasets/ (the same "
             "structure): calibrate on validation snapshots, never on test data (e.g. a data set with --split "
             "validation)"),
        case("train-val-test-cell", "a test cell given as --val", "train al4 --val al4-test/al4-T0900-01.npz -o "
             "m.safetensors",
             "snapshot al4-T0900-01 is in the test split: train and validate on train and validation snapshots, "
             "never on test data (a data-set folder gives its train split, --val FOLDER its validation split)"),
        case("data-unknown-file", "a structure file as density file", "data import al.xyz -o imported",
             "cannot tell the format of 'al.xyz' from its name; density files must be Gaussian cube (*.cube, *.cub, "
             "*.cube.gz), VASP CHGCAR (*CHGCAR*, *PARCHG*, *AECCAR*, CHG, *.vasp), GPAW restart (*.gpw) or XSF "
             "(*.xsf, *.xsf.gz); or pass a bigdens data-set directory"),
        case("data-import-missing", "density file that does not exist", "data import missing.cube -o imported",
             "density file 'missing.cube' does not exist"),
        case("data-import-into-file", "import into an existing file", "data import missing.cube -o al.xyz",
             "'al.xyz' exists and is not a directory"),
    ],
    "Density files (bigdens data import refuses what cannot be physical)": [
        case("density-all-negative", "a cube of -ρ (every value < 0)", "data import neg.cube -o imported",
             "density file 'neg.cube': every density value is <= 0 (max -0.00112 e/Å³): not an electron density "
             "(an orbital, a difference density, or a sign flip?); import total valence densities only"),
        case("density-negative-integral", "a difference density (integral < 0)", "data import diff.cube -o imported",
             "density file 'diff.cube': the density integrates to -0.12 electrons (<= 0; its negative values hold "
             "0.8865): not an electron density (a difference density?); import total valence densities only"),
        case("density-twice-valence", "a cube holding twice the valence electrons", "data import twice.cube -o imported",
             "density file 'twice.cube': the density integrates to 24 electrons, but its 4 atoms have 12 valence "
             "electrons in the HGH setups bigdens learns (ratio 2, more than 5% off): a density of other "
             "pseudopotentials (semicore or all-electron), other units (--cube-units, --xsf-units) or another "
             "structure, or a corrupt value; pass --allow-electron-mismatch to import it anyway"),
        case("density-no-element", "a cube whose first atom has atomic number 150", "data import z150.cube -o imported",
             "density file 'z150.cube': atomic number 150 is no element (1-118): the atom list is damaged"),
        case("density-nan", "a NaN in a cube", "data import nan.cube -o imported",
             "density file 'nan.cube': the density holds 1 NaN or infinite value(s); the DFT run or the file is "
             "broken: regenerate or drop it"),
        case("density-zero-voxel", "a cube whose second voxel vector is 0", "data import zerovox.cube -o imported",
             "density file 'zerovox.cube': the cell is singular (volume 0 Å³, lattice vectors [[4.05, 0.0, 0.0], "
             "[0.0, 0.0, 0.0], [0.0, 0.0, 4.05]] Å; a cube file's are its voxel vectors × point counts): a zero or "
             "degenerate vector means the file is damaged"),
        case("density-degenerate-voxels", "a cube with two equal voxel vectors", "data import flat.cube -o imported",
             "density file 'flat.cube': the cell is singular (volume 0 Å³, lattice vectors [[4.05, 0.0, 0.0], "
             "[4.05, 0.0, 0.0], [0.0, 0.0, 4.05]] Å; a cube file's are its voxel vectors × point counts): a zero or "
             "degenerate vector means the file is damaged"),
        case("density-negative-share", "a PAW-like CHGCAR with 1 % of its electrons in negative values",
             "data import paw_CHGCAR -o imported",
             "density file 'paw_CHGCAR': 0.12 of its 11.88 electrons (a share of 0.0101) sit in negative density "
             "values (min -3.12 e/Å³), more than the accepted share 0.001; a PAW pseudo-density can dip below zero: "
             "accept it with --allow-negative 0.02"),
        case("density-allow-negative-one", "--allow-negative 1", "data import paw_CHGCAR -o imported "
             "--allow-negative 1",
             "--allow-negative must be a fraction of the electrons within [0, 1), got 1.0; e.g. --allow-negative 0.02"),
        case("density-allow-negative-nan", "--allow-negative nan", "data import paw_CHGCAR -o imported "
             "--allow-negative nan",
             "--allow-negative must be a fraction of the electrons within [0, 1), got nan; e.g. --allow-negative 0.02"),
        case("density-singular-chgcar", "a CHGCAR with two equal lattice vectors", "data import flat_CHGCAR -o imported",
             "CHGCAR file 'flat_CHGCAR': the cell is singular (scale 1, lattice vectors [[4.05, 0.0, 0.0], [0.0, "
             "4.05, 0.0], [0.0, 4.05, 0.0]] Å): a zero or degenerate lattice vector means the file is damaged"),
        case("density-xsf-no-datagrid", "an XSF without DATAGRID_3D (a structure, no density)",
             "data import nogrid.xsf -o imported",
             "XSF file 'nogrid.xsf' holds no 3-D data grid (no BEGIN_BLOCK_DATAGRID_3D with a DATAGRID_3D in it): a "
             "structure without a density; write the density with pp.x (plot_num=0, iflag=3, output_format=5)"),
        case("density-import-directory", "a data-set folder given to import", "data import al4 -o imported",
             "'al4' is a directory: data import converts density files (cube, CHGCAR, .gpw, XSF); train, evaluate "
             "and calibrate read data sets and snapshots as they are"),
        case("density-import-snapshot", "a snapshot .npz given to import",
             "data import al4/al4-T0300-00.npz -o imported",
             "'al4/al4-T0300-00.npz' is a bigdens snapshot already: data import converts density files (cube, "
             "CHGCAR, .gpw, XSF); train, evaluate and calibrate read data sets and snapshots as they are"),
        case("density-temperature-nan", "--temperature nan", "data import neg.cube -o imported --temperature nan",
             "--temperature must be > 0 K, got nan; e.g. --temperature 300"),
    ],
    "Cluster profiles": [
        case("profile-unknown-name", "a profile name not in cluster_configs/", "clusters nosuch",
             "unknown cluster profile 'nosuch'; available: … (a profile is cluster_configs/NAME.yaml, or give a "
             "path to a .yaml file)"),
        case("profile-missing-file", "a profile path that does not exist", "clusters missing.yaml",
             "cluster profile file 'missing.yaml' does not exist"),
        case("profile-bad-yaml", "YAML that does not parse", "clusters bad-yaml.yaml",
             "bad-yaml.yaml: not valid YAML (while parsing a flow sequence)"),
        case("profile-not-mapping", "a YAML list", "clusters not-mapping.yaml",
             "not-mapping.yaml: a profile is a mapping with the sections 'jobqueue' and 'bigdens'"),
        case("profile-unknown-key", "bigdens.jobz", "clusters unknown-key.yaml",
             "unknown-key.yaml: unknown bigdens key 'jobz'; allowed: block, jobs, max_cores_per_job, security, "
             "threads_per_worker, wait_for_workers_s"),
        case("profile-unknown-section", "a top-level key 'extra'", "clusters unknown-section.yaml",
             "unknown-section.yaml: unknown top-level key(s) ['extra']; allowed: scheduler, jobqueue, bigdens, "
             "description"),
        case("profile-missing-key", "no jobqueue.cores", "clusters missing-key.yaml",
             "missing-key.yaml: missing required key jobqueue.cores (e.g. cores: 8, memory: 16GB, walltime: "
             "'01:00:00')"),
        case("profile-wrong-type", "cores: two", "clusters wrong-type.yaml",
             "wrong-type.yaml: key 'jobqueue.cores' must be int, got 'two'"),
        case("profile-bad-memory", "memory: lots", "predict al.xyz --cluster slurm:bad-memory.yaml --out new.zarr",
             "bad-memory.yaml: jobqueue.memory 'lots' is not a size like '16GB' or '500MiB'"),
        case("profile-bad-walltime", "walltime: 10 minutes", "clusters bad-walltime.yaml",
             "bad-walltime.yaml: jobqueue.walltime '10 minutes' is not HH:MM:SS, MM:SS or D-HH:MM:SS"),
        case("cluster-unknown-kind", "--cluster pbs", "predict al.xyz --cluster pbs " + PREDICT,
             "cluster must be 'local' or 'slurm:NAME', got 'pbs'"),
        case("cluster-no-profile-name", "--cluster slurm:", "predict al.xyz --cluster slurm: --out new.zarr",
             "cluster 'slurm:' needs a configuration name, e.g. --cluster slurm:local-slurm (`bigdens clusters` "
             "lists them)"),
    ],
    "Stores": [
        case("store-out-is-file", "--out names a file", "predict al.xyz " + STORE + " --out file.zarr",
             "'file.zarr' exists and is not a bigdens store; choose another -o/--output or pass --overwrite"),
        case("store-out-exists", "--out names a store, no flag", "predict al.xyz " + STORE + " --out done.zarr",
             "'done.zarr' already holds a bigdens store; pass --resume to continue it or --overwrite to replace it"),
        case("store-overwrite-foreign-folder", "--overwrite of a folder of other files",
             "predict al.xyz " + STORE + " --out notes --overwrite",
             "'notes' is a non-empty folder that is not a Zarr store; --overwrite only replaces files and stores: "
             "remove it yourself or choose another -o/--output"),
        case("store-resume-other-run", "--resume with another seed", "predict al.xyz " + STORE
             + " --out done.zarr --resume --seed 5",
             "cannot resume: the store was made with other settings (seed: store has 0, this run 5 (set by "
             "--seed)); rerun with the store's settings or pass --overwrite to start again"),
        case("store-resume-missing", "--resume of nothing", "predict al.xyz " + STORE + " --out new.zarr --resume",
             "cannot resume: 'new.zarr' does not exist; run without --resume to start a new store"),
        case("store-resume-not-store", "--resume of a folder of other files",
             "predict al.xyz " + STORE + " --out notes --resume",
             "cannot resume: 'notes' is not a bigdens store; run without --resume to start a new store"),
        case("store-resume-old-format", "--resume of a store made before the atom tiles (store format 1)",
             "predict al.xyz " + STORE + " --out format1.zarr --resume",
             "'format1.zarr' is in store format 1 (bigdens 0.1.0), made before workers read the atoms by tile; "
             "this bigdens resumes format 2: start it again with --overwrite"),
        case("store-out-folder-missing", "--out in a folder that does not exist",
             "predict al.xyz " + STORE + " --out nodir/new.zarr",
             "the output folder '…/nodir' does not exist (or is not a folder); create it first"),
        case("store-out-under-file", "--out under a file", "predict al.xyz " + STORE + " --out al.xyz/new.zarr",
             "the output folder '…/al.xyz' does not exist (or is not a folder); create it first"),
        case("verify-not-store", "verify a folder of other files", "verify notes",
             "'notes' is not a bigdens store (no zarr.json in it); give a store written by `bigdens predict`"),
        case("verify-missing", "verify a path that does not exist", "verify missing.zarr",
             "'missing.zarr' does not exist; give a store written by `bigdens predict`"),
        case("export-unknown-var", "--var rho", "export done.zarr --cube d.cube --var rho",
             "unknown variable 'rho'; choose one of density, density_std_epistemic, density_std_aleatoric, "
             "density_std"),
        case("export-not-store", "export a folder of other files", "export notes --cube d.cube",
             "'notes' is not a bigdens store (no zarr.json in it); give a store written by `bigdens predict`"),
        case("export-incomplete", "export an unfinished store", "export partial.zarr --cube d.cube",
             "'partial.zarr' is incomplete (unwritten points read NaN); finish it with `bigdens predict ... "
             "--resume` first"),
        case("export-unknown-format", "-o with a name that means no format bigdens writes",
             "export done.zarr -o d.dat",
             "cannot tell which format to write 'd.dat' in from its name; name it as Gaussian cube (*.cube, *.cub), "
             "VASP CHGCAR (*CHGCAR*, *PARCHG*, *AECCAR*, CHG, *.vasp), XSF (*.xsf) or Quantum ESPRESSO charge density "
             "(charge-density.dat), or choose one with --format cube, chgcar, xsf or qe"),
        case("export-read-only-format", "-o with the name of a format bigdens reads but does not write",
             "export done.zarr -o d.gpw",
             "'d.gpw' names a GPAW restart file, which export does not write (`bigdens dft STORE -o FILE.gpw` starts "
             "a DFT run from the store and writes one); name it as Gaussian cube (*.cube, "
             "*.cub), VASP CHGCAR (*CHGCAR*, *PARCHG*, *AECCAR*, CHG, *.vasp), XSF (*.xsf) or Quantum ESPRESSO charge "
             "density (charge-density.dat), or choose one with --format cube, chgcar, xsf or qe"),
        case("dft-output-not-gpw", "bigdens dft -o with a name that is not a GPAW restart file",
             "dft done.zarr -o start.txt",
             "the output 'start.txt' must be a GPAW restart file named *.gpw, e.g. -o out.gpw"),
        case("dft-harris-output-not-json", "bigdens dft --harris-foulkes -o with a name that is not JSON",
             "dft done.zarr --harris-foulkes -o hf.gpw",
             "the output 'hf.gpw' must be a JSON file of the energies, named *.json, e.g. -o hf.json"),
        case("dft-one-sample", "bigdens dft --harris-foulkes --samples 1 (no spread from one sample)",
             "dft done.zarr --harris-foulkes --samples 1 -o hf.json",
             "--samples must be 0 (no σ) or at least 2, got 1"),
        case("export-qe-no-ecutrho", "export to pw.x's charge-density.dat without the run's cutoff",
             "export done.zarr -o charge-density.dat",
             "a Quantum ESPRESSO charge density file lists the G-vectors of one pw.x run: give its cutoff, "
             "--ecutrho RY (4 x ecutwfc unless the run sets ecutrho)"),
        case("export-ecutrho-not-qe", "--ecutrho with a format that takes none", "export done.zarr -o d.cube --ecutrho 80",
             "--ecutrho is for --format qe only; the Gaussian cube writer takes no such option"),
        case("export-qe-grid-too-coarse", "export to charge-density.dat with an ecutrho the store's grid cannot hold",
             "export done.zarr -o charge-density.dat --ecutrho 2000",
             "the 4x4x4 grid holds only 0% of the run's G-vectors (ecutrho 2000 Ry); predict on a finer grid (pw.x's "
             "FFT grid or finer)"),
        case("dft-partial-store", "bigdens dft of an unfinished store", "dft partial.zarr -o start.gpw",
             "'partial.zarr' is incomplete (unwritten points read NaN); finish it with `bigdens predict ... "
             "--resume` first"),
        case("export-folder-missing", "--cube in a folder that does not exist",
             "export done.zarr --cube nodir/d.cube",
             "cannot write 'nodir/d.cube': its folder does not exist; create it first"),
        case("charges-not-store", "charges of a folder of other files", "charges notes",
             "'notes' is not a bigdens store (no zarr.json in it); give a store written by `bigdens predict`"),
        case("charges-old-store", "charges of a store made before bigdens computed them", "charges old.zarr",
             "'old.zarr' was made before bigdens computed per-atom charges; rerun `bigdens predict ... --overwrite` "
             "to get them"),
        case("charges-incomplete", "charges of an unfinished store", "charges partial.zarr",
             "'partial.zarr' is incomplete: its charges are written when the last block is done; finish it with "
             "`bigdens predict ... --resume`"),
        case("charges-output-format", "-o with a suffix other than .csv or .extxyz", "charges done.zarr -o q.txt",
             "cannot tell the format of 'q.txt': name it FILE.csv or FILE.extxyz"),
        case("plot-not-store", "plot a folder of other files", "plot notes -o p.png",
             "'notes' is not a bigdens store (no zarr.json in it); give a store written by `bigdens predict`"),
        case("plot-bad-plane", "--plane w=0.5", "plot done.zarr --plane w=0.5 -o p.png",
             "--plane must look like z=0.5 (axis x, y or z; a fraction in [0, 1]), got 'w=0.5'"),
        case("plot-unknown-format", "-o with a suffix matplotlib does not write", "plot done.zarr -o p.weird",
             "cannot write the image 'p.weird': unknown format 'weird'; use one of …, e.g. -o plane.png"),
        case("plot-folder-missing", "-o in a folder that does not exist", "plot done.zarr -o nodir/p.png",
             "cannot write 'nodir/p.png': its folder does not exist; create it first"),
    ],
    "Damaged stores (export and plot check every block they read against the ledger)": [
        case("export-chunk-deleted", "export a complete store whose chunk file was deleted",
             "export chunk-deleted.zarr --cube d.cube",
             "'chunk-deleted.zarr' is damaged: 1 of 1 blocks fail their ledger check (block 0: density checksum "
             "differs (chunk missing, changed or swapped)); repair it with `bigdens verify --repair "
             "chunk-deleted.zarr`, then `bigdens predict ... --resume`"),
        case("export-chunk-truncated", "export a store with a truncated chunk file",
             "export chunk-truncated.zarr --cube d.cube",
             "'chunk-truncated.zarr' is damaged: 1 of 1 blocks fail their ledger check (block 0: density chunk "
             "unreadable (…)); repair it with `bigdens verify --repair chunk-truncated.zarr`, then `bigdens "
             "predict ... --resume`"),
        case("export-variable-deleted", "export a store whose density_std folder was deleted",
             "export var-deleted.zarr --cube d.cube",
             "'var-deleted.zarr' is damaged (density_std: array missing (no folder)); repair it with `bigdens "
             "verify --repair var-deleted.zarr`, then `bigdens predict ... --resume`"),
        case("export-coords-edited", "export a store whose x coordinates were edited",
             "export coords-edited.zarr --cube d.cube",
             "'coords-edited.zarr' is damaged (x: coordinates are not the grid's (index 1: 1.1125, expected 1.0125 "
             "Å)); repair it with `bigdens verify --repair coords-edited.zarr`, then `bigdens predict ... --resume`"),
        case("export-ledger-deleted", "export a complete store missing a ledger entry",
             "export ledger-deleted.zarr --cube d.cube",
             "'ledger-deleted.zarr' is damaged: 1 of 1 blocks fail their ledger check (block 0: no ledger entry "
             "although the store says complete); repair it with `bigdens verify --repair ledger-deleted.zarr`, then "
             "`bigdens predict ... --resume`"),
        case("plot-metadata-edited", "plot a store whose density zarr.json was edited", "plot meta-edited.zarr -o p.png",
             "'meta-edited.zarr' is damaged (density: fill_value is 0.0, expected 'NaN'); repair it with `bigdens "
             "verify --repair meta-edited.zarr`, then `bigdens predict ... --resume`"),
        case("plot-atoms-moved", "plot a store whose atoms were moved", "plot atoms-moved.zarr -o p.png",
             "'atoms-moved.zarr' is damaged (positions/numbers: the atoms do not match the store's structure hash); "
             "its atoms cannot be rebuilt from the store: predict it again with `bigdens predict ... --overwrite`"),
        case("plot-chunk-deleted", "plot through a deleted chunk", "plot chunk-deleted.zarr -o p.png",
             "'chunk-deleted.zarr' is damaged: 1 of 1 blocks fail their ledger check (block 0: density checksum "
             "differs (chunk missing, changed or swapped)); repair it with `bigdens verify --repair "
             "chunk-deleted.zarr`, then `bigdens predict ... --resume`"),
        case("export-block-from-other-run", "export a store whose block was copied in, with its ledger entry and "
             "charges file, from another run of the same shape", "export from-other-run.zarr --cube d.cube",
             "'from-other-run.zarr' is damaged: 1 of 1 blocks fail their ledger check (block 0: its ledger entry was "
             "recorded by another run (…; this store's is …): a block copied in from another store); repair it with "
             "`bigdens verify --repair from-other-run.zarr`, then `bigdens predict ... --resume`"),
        case("export-ledger-folder-deleted", "export a store whose ledger folder was deleted",
             "export ledger-gone.zarr --cube d.cube",
             "'ledger-gone.zarr' is damaged (ledger: folder missing (every block's record is lost)); repair it with "
             "`bigdens verify --repair ledger-gone.zarr`, then `bigdens predict ... --resume`"),
        case("export-cube-is-folder", "--cube names a folder", "export done.zarr --cube notes",
             "cannot write 'notes': it is a folder; give a file name, e.g. -o density.cube"),
    ],
    "Output paths (nothing written inside a store but by predict; no input overwritten)": [
        case("export-damaged-root", "export of a store whose zarr.json was cut short", "export half-root.zarr -o d.cube",
             "'half-root.zarr' is a damaged store: its zarr.json is not readable JSON (half-written or edited); "
             "predict it again (--overwrite), or restore that file"),
        case("export-into-store-metadata", "export -o onto a store's own zarr.json",
             "export done.zarr -o done.zarr/zarr.json --format cube",
             "'done.zarr/zarr.json' lies inside the bigdens store '…/done.zarr'; nothing is written inside a store "
             "but by `bigdens predict`: choose a path outside it"),
        case("predict-into-store-array", "predict -o an array inside an existing store, with --overwrite",
             "predict al.xyz " + STORE + " --out done.zarr/density --overwrite",
             "'done.zarr/density' lies inside the bigdens store '…/done.zarr'; nothing is written inside a store but "
             "by `bigdens predict`: choose a path outside it"),
        case("predict-output-is-input", "predict -o the structure file itself, with --overwrite",
             "predict al.xyz " + STORE + " --out al.xyz --overwrite",
             "the output 'al.xyz' is also an input of this command ('al.xyz'); writing it would destroy that input: "
             "choose another -o/--output"),
        case("charges-output-is-store", "charges -o a bigdens store", "charges done.zarr -o partial.zarr",
             "'partial.zarr' is a bigdens store, which `bigdens charges` would overwrite; choose another -o/--output"),
    ],
    "Stores in use (one writer per store)": [
        case("store-in-use-elsewhere", "--overwrite of a store a run on another host writes",
             "predict al.xyz " + STORE + " --out busy.zarr --overwrite",
             "'busy.zarr' is in use by bigdens predict (pid 4242 on host node7, run 5f0c6d2a9e8b4c1d8a7b6c5d4e3f2a1b, "
             "since 2025-01-01T00:00:00+00:00); wait for it to finish or stop it on node7; a lock from another host "
             "is not judged stale: if that run is gone, delete '…/busy.zarr.lock'"),
        case("store-in-use-here", "--resume of a store a live process on this host writes",
             "predict al.xyz " + STORE + " --out busy-here.zarr --resume",
             "'busy-here.zarr' is in use by bigdens predict (pid 1 on host …, run 5f0c6d2a9e8b4c1d8a7b6c5d4e3f2a1b, "
             "since 2025-01-01T00:00:00+00:00); wait for it to finish or stop it (kill 1); a lock left by a run that "
             "died is removed automatically"),
        case("store-lock-unreadable", "a damaged lock file beside the store",
             "predict al.xyz " + STORE + " --out busy-bad.zarr",
             "'busy-bad.zarr' is locked by '…/busy-bad.zarr.lock', which cannot be read (not a bigdens lock); if no "
             "bigdens run uses the store, delete that file"),
        case("verify-in-use", "verify --repair of a store another host's run writes", "verify busy.zarr --repair",
             "'busy.zarr' is in use by bigdens predict (pid 4242 on host node7, run 5f0c6d2a9e8b4c1d8a7b6c5d4e3f2a1b, "
             "since 2025-01-01T00:00:00+00:00); wait for it to finish or stop it on node7; a lock from another host "
             "is not judged stale: if that run is gone, delete '…/busy.zarr.lock'"),
    ],
    "Trajectories (predict --frames; plot, export and charges --frame)": [
        case("frames-out-of-range", "--frames beyond the file's frames", "predict md.xyz --frames 0:5 " + PREDICT,
             "--frames 0:5: frame 5 is out of range: structure file 'md.xyz' holds 3 frames (0 to 2)"),
        case("frames-empty-selection", "--frames that select nothing", "predict md.xyz --frames 2:1 " + PREDICT,
             "--frames 2:1 selects no frame of the 3 in structure file 'md.xyz'"),
        case("frames-malformed", "--frames that is no slice", "predict md.xyz --frames 0-2 " + PREDICT,
             "--frames must look like START:STOP:STEP (e.g. 0:100:10, each part optional), got '0-2'"),
        case("frames-zero-step", "--frames with STEP 0", "predict md.xyz --frames ::0 " + PREDICT,
             "--frames '::0': STEP must be a positive integer, got 0"),
        case("frames-empty-trajectory", "an ASE .traj file without frames", "predict empty.traj --frames : "
             + PREDICT, "structure file 'empty.traj' holds no frames (an empty trajectory)"),
        case("frames-varying-cell", "a trajectory whose cell changes at frame 1 (NPT)",
             "predict npt.xyz --frames : " + PREDICT,
             "structure file 'npt.xyz': the cell of frame 1 differs from frame 0's (by up to 0.0405 Å); a "
             "trajectory store needs a constant cell (NVT/NVE): predict constant-cell stretches separately"),
        case("frames-atom-count", "frames with different atom counts", "predict grow.xyz --frames : " + PREDICT,
             "structure file 'grow.xyz': frame 1 has 3 atoms, frame 0 has 4; every frame of a trajectory store "
             "must hold the same atoms"),
        case("frame-missing", "export of a trajectory store without --frame", "export traj.zarr --cube d.cube",
             "'traj.zarr' holds 2 frames: choose one with --frame K (0 to 1)"),
        case("frame-out-of-range", "plot --frame 2 of a 2-frame store", "plot traj.zarr --frame 2 -o p.png",
             "--frame 2 is out of range: 'traj.zarr' holds 2 frames (0 to 1)"),
        case("frame-of-single-store", "charges --frame of a single structure's store", "charges done.zarr --frame 0",
             "'done.zarr' holds one structure, not a trajectory: drop --frame"),
    ],
    "Sizes (estimated before anything starts; --skip-size-check forces them)": [
        case("predict-store-too-large-for-disk", "--spacing 0.001: a 1 TB store",
             "predict al.xyz --model al.safetensors --spacing 0.001 --workers 0 --out new.zarr",
             "the prediction would write about … TB, but … is free at '…': free space, choose another output or a "
             "coarser grid, or --skip-size-check to try anyway"),
        case("predict-too-many-blocks", "--block 2 on a fine grid",
             "predict al.xyz --model al.safetensors --spacing 0.01 --block 2 --workers 0 --out new.zarr",
             "the prediction would need … blocks (at most 2,000,000): use a larger --block or a coarser "
             "grid; --skip-size-check forces it"),
        case("predict-tiny-blocks", "--block 1: every grid point its own task",
             "predict al.xyz --model al.safetensors --grid 40 40 40 --block 1 --workers 0 --out new.zarr",
             "the prediction would spend most of its about … of CPU time on the overhead of 64,000 small blocks: "
             "use a larger --block; --skip-size-check forces it"),
        case("predict-samples-too-many", "--mc-samples 100000000",
             "predict al.xyz --model al.safetensors --mc-samples 100000000 --workers 0 --out new.zarr",
             "the prediction would need about … of memory per process, but … is available: lower --mc-samples, "
             "--block or the cutoff, use fewer workers, or --skip-size-check to try anyway"),
        case("describe-cutoff-too-large", "--r-cut 1000", "describe al.xyz --r-cut 1000 --m 4",
             "describe would need about … of memory per process, but … is available: lower --r-cut or --block, or "
             "--skip-size-check to try anyway"),
        case("build-too-many-atoms", "--cells 1000 1000 1000", "build al --cells 1000 1000 1000 -o b.xyz",
             "a structure of 4,000,000,000 atoms would need about 1.6 TB of memory per process, but … is "
             "available: build fewer --cells, or --skip-size-check to try anyway"),
    ],
    "Run settings": [
        case("block-timeout-zero", "--block-timeout 0", "predict al.xyz --block-timeout 0 " + PREDICT,
             "block_timeout must be a positive number of seconds or None (automatic), got 0.0; e.g. "
             "block_timeout=600 (--block-timeout 600)"),
        case("block-timeout-nan", "--block-timeout nan", "predict al.xyz --block-timeout nan " + PREDICT,
             "block_timeout must be a positive number of seconds or None (automatic), got nan; e.g. "
             "block_timeout=600 (--block-timeout 600)"),
        case("predict-mc-samples-zero", "S = 0", "predict al.xyz " + PREDICT + " --mc-samples 0",
             "the number of Monte Carlo samples must be an integer >= 1, got 0; e.g. mc_samples=20 "
             "(--mc-samples 20)"),
        case("predict-mc-samples-negative", "S < 0", "predict al.xyz " + PREDICT + " --mc-samples -3",
             "the number of Monte Carlo samples must be an integer >= 1, got -3; e.g. mc_samples=20 "
             "(--mc-samples 20)"),
        case("predict-block-not-chunk-multiple", "block 6, chunk 4", "predict al.xyz " + PREDICT
             + " --block 6 --chunk 4",
             "block (6, 6, 6) is not a multiple of the chunk (4, 4, 4) along every axis; blocks must write whole "
             "chunks: use e.g. block=(4, 4, 4)"),
        case("predict-block-zero", "block 0", "predict al.xyz " + PREDICT + " --block 0",
             "block must be a positive integer or three of them (grid points), got 0; e.g. block=64"),
        case("predict-chunk-zero", "chunk 0", "predict al.xyz " + PREDICT + " --chunk 0",
             "chunk must be a positive integer or three of them (grid points), got 0; e.g. chunk=64"),
        case("predict-seed-negative", "seed -1", "predict al.xyz " + PREDICT + " --seed -1",
             "seed must be an integer >= 0, got -1"),
        case("predict-seed-too-large", "seed 2**32", "predict al.xyz " + PREDICT + " --seed 4294967296",
             "seed must be below 2**32, got 4294967296"),
        case("predict-workers-negative", "workers -1", "predict al.xyz " + PREDICT + " --workers -1",
             "workers must be an integer >= 0, got -1"),
        case("predict-threads-zero", "0 threads per worker", "predict al.xyz " + PREDICT + " --threads-per-worker 0",
             "threads_per_worker must be an integer >= 1, got 0"),
        case("predict-max-blocks-negative", "--max-blocks -1", "predict al.xyz " + PREDICT + " --max-blocks -1",
             "max_blocks must be an integer >= 0 or None, got -1"),
        case("predict-resume-and-overwrite", "both flags", "predict al.xyz " + PREDICT + " --resume --overwrite",
             "resume and overwrite exclude each other: --resume continues the store, --overwrite replaces it"),
        case("predict-device-unknown", "--device tpu", "predict al.xyz " + PREDICT + " --device tpu",
             "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda'); see "
             "`bigdens predict --help`"),
        case("predict-device-cuda-missing", "--device cuda without a GPU", "predict al.xyz " + PREDICT
             + " --device cuda",
             "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto", skip_with_cuda=True),
        case("predict-dry-run-local", "--dry-run without SLURM", "predict al.xyz " + PREDICT + " --dry-run",
             "--dry-run shows the SLURM job script: use it with --cluster slurm:NAME"),
        case("predict-report-no-dask", "--report with --workers 0", "predict al.xyz " + PREDICT + " --report r.html",
             "a Dask performance report needs a Dask cluster; drop --report or use --workers >= 1"),
        case("predict-scheduler-file-no-workers", "--scheduler-file with --workers 0",
             "predict al.xyz " + PREDICT + " --scheduler-file s.json",
             "workers=0 runs in this process and cannot join a cluster; drop --scheduler-file or --workers 0"),
        case("predict-scheduler-file-missing", "a scheduler file that does not exist",
             "predict al.xyz --model al.safetensors --grid 4 4 4 --out new.zarr --scheduler-file s.json",
             "scheduler file 's.json' does not exist; start the scheduler with `dask scheduler --scheduler-file "
             "FILE` first"),
        case("predict-slurm-no-workers", "--cluster slurm:NAME with --workers 0",
             "predict al.xyz " + PREDICT + " --cluster slurm:good.yaml",
             "workers=0 runs every block in this process and submits nothing; drop --workers 0 or --cluster "
             "slurm:NAME"),
        case("train-output-folder-missing", "-o in a folder that does not exist",
             "train al4 -o nodir/m.safetensors --epochs 1",
             "cannot write the model 'nodir/m.safetensors': its folder does not exist; create it first"),
        case("finetune-output-is-folder", "-o names a folder", "finetune al.safetensors al4 -o al4",
             "-o 'al4' is a folder; give a model file, e.g. -o 'al4/model.safetensors'"),
        case("train-epochs-zero", "--epochs 0", "train al4 --epochs 0 -o m.safetensors",
             "epochs must be >= 1, got 0"),
        case("train-lr-negative", "--lr -1", "train al4 --lr -1 -o m.safetensors", "lr must be > 0, got -1.0"),
        case("train-device-unknown", "--device tpu", "train al4 --device tpu -o m.safetensors",
             "argument --device: invalid choice: 'tpu' (choose from 'auto', 'cpu', 'cuda'); see "
             "`bigdens train --help`"),
        case("train-device-cuda-missing", "--device cuda without a GPU", "train al4 --device cuda --epochs 1 "
             "-o m.safetensors", "device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto",
             skip_with_cuda=True),
        case("train-hidden-zero", "--hidden 0", "train al4 --hidden 0 -o m.safetensors",
             "hidden layer widths must be positive integers, got (0,)"),
        case("train-unknown-species", "--species Xx", "train al4 --species Xx -o m.safetensors",
             "unknown chemical symbol(s) ['Xx'] in --species"),
        case("finetune-frozen-lr-scale", "--frozen-lr-scale 2",
             "finetune al.safetensors al4 --frozen-lr-scale 2 -o ft.safetensors",
             "frozen_lr_scale must be within [0, 1], got 2.0"),
        case("evaluate-mc-samples-zero", "--mc-samples 0", "evaluate al.safetensors al4 --mc-samples 0",
             "the number of Monte Carlo samples must be >= 1, got 0"),
        case("calibrate-on-training-data", "calibrating on snapshots the model was trained on",
             "calibrate trained.safetensors al4 -o cal.safetensors",
             "the model was trained on al4-T0300-00: calibrate on snapshots it has not seen (its errors there are "
             "too small)"),
        case("calibrate-renamed-training-cell", "calibrating on a renamed copy of a cell the model was trained on "
             "(the model records its training cells' structure digests)",
             "calibrate trained-struct.safetensors renamed.npz -o cal.safetensors",
             "the model was trained on renamed (= al4-T0300-00): calibrate on snapshots it has not seen (its errors "
             "there are too small)"),
        case("calibrate-output-is-folder", "-o names a folder", "calibrate al.safetensors al4 -o al4",
             "-o 'al4' is a folder; give a model file, e.g. -o 'al4/model.safetensors'"),
        case("train-seed-negative", "--seed -1", "train al4 --seed -1 -o m.safetensors",
             "--seed must be an integer >= 0, got -1"),
        case("train-threads-negative", "--threads -2", "train al4 --threads -2 -o m.safetensors",
             "--threads must be >= 1, got -2; leave it out to use every core"),
        case("evaluate-threads-zero", "--threads 0 (not every core)", "evaluate al.safetensors al4 --threads 0",
             "--threads must be >= 1, got 0; leave it out to use every core"),
        case("calibrate-seed-negative", "--seed -1", "calibrate al.safetensors al4 --seed -1 -o cal.safetensors",
             "--seed must be an integer >= 0, got -1"),
        case("train-m-zero", "--m 0", "train al4 --m 0 -o m.safetensors",
             "each radial count M must be within 1..256, got m=(0,)"),
        case("train-r-cut-zero", "--r-cut 0", "train al4 --r-cut 0 -o m.safetensors",
             "r_cut must be a positive number of Å, got 0.0"),
        case("train-nll-beta-out-of-range", "--nll-beta 2", "train al4 --nll-beta 2 -o m.safetensors",
             "nll_beta must be within [0, 1], got 2.0"),
        case("train-batch-size-zero", "--batch-size 0", "train al4 --batch-size 0 -o m.safetensors",
             "batch_size must be >= 1, got 0"),
        case("finetune-layers-zero", "--layers 0", "finetune al.safetensors al4 --layers 0 -o ft.safetensors",
             "--layers must be within 1..3 for this model, got 0"),
    ],
    "Structure building": [
        case("build-sige-no-x", "sige without --x", "build sige -o b.xyz",
             "bigdens build sige needs the Ge fraction, e.g. --x 0.5"),
        case("build-al-with-x", "al with --x", "build al --x 0.5 -o b.xyz", "--x is for sige only"),
        case("build-x-out-of-range", "--x 1.5", "build sige --x 1.5 -o b.xyz",
             "Ge fraction x must be within [0, 1], got 1.5"),
        case("build-cells-zero", "--cells 0 1 1", "build al --cells 0 1 1 -o b.xyz",
             "cells must be positive integers, got (0, 1, 1)"),
        case("build-a-negative", "--a -4", "build al --a -4 -o b.xyz", "lattice constant must be > 0 Å, got -4.0"),
        case("build-a-zero", "--a 0 (not the default)", "build al --a 0 -o b.xyz",
             "lattice constant must be > 0 Å, got 0.0"),
        case("build-seed-negative", "--seed -1", "build sige --x 0.5 --seed -1 -o b.xyz",
             "seed must be an integer >= 0, got -1"),
        case("build-too-many-vacancies", "100 vacancies in 4 atoms", "build al --vacancies 100 -o b.xyz",
             "number of vacancies must be within [0, 3], got 100"),
        case("build-void-too-large", "a void larger than the cell", "build al --void 100 -o b.xyz",
             "a void of radius 100.0 Å removes every atom of the cell"),
        case("build-cluster-unknown-element", "--cluster Xx 2", "build al --cluster Xx 2 -o b.xyz",
             "unknown chemical element 'Xx'"),
        case("build-cluster-radius-not-number", "--cluster Cu abc", "build al --cluster Cu abc -o b.xyz",
             "--cluster takes SYMBOL R with R a radius in Å, got R='abc'; e.g. --cluster Cu 3.0"),
        case("build-rattle-negative", "--rattle -1", "build al --rattle -1 -o b.xyz",
             "rattle amplitude must be >= 0 Å, got -1.0"),
        case("build-unknown-format", "-o with a suffix ASE does not know", "build al -o b.weird",
             "cannot write 'b.weird' (UnknownFileTypeError: weird); choose a format ASE writes with --out-format"),
        case("build-folder-missing", "-o in a folder that does not exist", "build al -o nodir/b.xyz",
             "cannot write 'nodir/b.xyz': its folder does not exist; create it first"),
        case("build-output-is-folder", "-o names a folder", "build al -o notes",
             "-o 'notes' is a folder; give a structure file, e.g. -o 'notes/structure.xyz'"),
        case("build-vacancies-negative", "--vacancies -1", "build al --vacancies -1 -o b.xyz",
             "number of vacancies must be within [0, 3], got -1"),
        case("build-void-zero", "--void 0", "build al --void 0 -o b.xyz", "void radius must be > 0 Å, got 0.0"),
        case("build-rattle-nan", "--rattle nan", "build al --rattle nan -o b.xyz",
             "rattle amplitude must be >= 0 Å, got nan"),
        case("build-a-nan", "--a nan", "build al --a nan -o b.xyz", "lattice constant must be > 0 Å, got nan"),
        case("build-out-format-unknown", "--out-format nosuch", "build al --out-format nosuch -o b.xyz",
             "cannot write 'b.xyz' (UnknownFileTypeError: nosuch); choose a format ASE writes with --out-format"),
    ],
    "DFT data generation (refused before any MD or GPAW work)": [
        case("datagen-temperature-negative", "--temperatures -5", "datagen al --temperatures -5 -o ds",
             "temperatures must be > 0 K, got -5.0; e.g. --temperatures 300 600 900"),
        case("datagen-structure-missing", "a structure file that does not exist",
             "datagen missing.xyz --temperatures 300 -o ds",
             "system must be 'al', 'sige' or an existing structure file, got 'missing.xyz'"),
        case("datagen-snapshots-zero", "--snapshots-per-temperature 0",
             "datagen al --temperatures 300 --snapshots-per-temperature 0 -o ds",
             "--snapshots-per-temperature must be >= 1, got 0"),
        case("datagen-sige-no-x", "sige without --x", "datagen sige --temperatures 300 -o ds",
             "bigdens datagen sige needs the Ge fraction(s), e.g. --x 0 0.25 0.5"),
        case("datagen-no-hgh-setup", "Pu, which has no HGH setup", "datagen pu.xyz --temperatures 300 -o ds",
             "element 'Pu' has no HGH pseudopotential setup in GPAW; the bigdens DFT protocol supports H, He, …"),
        case("datagen-atoms-too-close", "two atoms 0.3 Å apart", "datagen close.xyz --temperatures 300 -o ds",
             "atom 0 is 0.300 Å from atom 1 (minimum allowed 0.5 Å); check the cell and the position units (Å)"),
        case("datagen-split-sum", "split fractions summing to 1.5",
             "datagen al --temperatures 300 --split-fractions 0.5 0.5 0.5 -o ds",
             "split fractions must be three non-negative numbers summing to 1, got [0.5, 0.5, 0.5]"),
        case("datagen-timestep-zero", "--timestep 0", "datagen al --temperatures 300 --timestep 0 -o ds",
             "MDSettings.timestep_fs (--timestep) must be a positive number, got 0.0"),
        case("datagen-kpts-zero", "--kpts 0 1 1", "datagen al --temperatures 300 --kpts 0 1 1 -o ds",
             "DFTSettings.kpts (--kpts) must be three positive integers, got (0, 1, 1)"),
        case("datagen-output-is-file", "-o names a file", "datagen al --temperatures 300 -o al.xyz",
             "-o 'al.xyz': '…/al.xyz' exists and is not a folder; choose another -o"),
        case("datagen-structure-directory", "a folder as the structure", "datagen notes --temperatures 300 -o ds",
             "system 'notes' is a directory; give 'al', 'sige' or a structure file"),
        case("datagen-structure-damaged", "a structure file that does not parse",
             "datagen garbage.xyz --temperatures 300 -o ds",
             "structure file 'garbage.xyz' is damaged: it does not parse as 'extxyz' (XYZError: …); check or "
             "rewrite the file"),
        case("datagen-seed-negative", "--seed -1", "datagen al --temperatures 300 --seed -1 -o ds",
             "--seed must be an integer >= 0, got -1"),
        case("datagen-max-snapshots-negative", "--max-snapshots -1 (was: all but one)",
             "datagen al --temperatures 300 --max-snapshots -1 -o ds",
             "--max-snapshots must be >= 0 (0: write the plan only), got -1"),
        case("datagen-log-dir-is-file", "--log-dir names a file", "datagen al --temperatures 300 --log-dir al.xyz -o ds",
             "--log-dir 'al.xyz' is not a folder; give an existing folder for GPAW's logs"),
        case("datagen-log-dir-missing", "--log-dir that does not exist",
             "datagen al --temperatures 300 --log-dir nodir -o ds",
             "--log-dir 'nodir' does not exist; give an existing folder for GPAW's logs"),
        case("datagen-all-test-and-split", "--all-test with --split-fractions", "datagen al --temperatures 300 "
             "--all-test --split-fractions 0.5 0.5 0 -o ds",
             "--all-test and --split-fractions exclude each other: --all-test puts every snapshot in the test split "
             "(the same as --split-fractions 0 0 1)"),
        case("datagen-temperature-nan", "--temperatures nan", "datagen al --temperatures nan -o ds",
             "temperatures must be > 0 K, got nan; e.g. --temperatures 300 600 900"),
        case("datagen-x-out-of-range", "--x 1.5", "datagen sige --x 1.5 --temperatures 300 -o ds",
             "Ge fraction x must be within [0, 1], got 1.5"),
        case("datagen-resume-other-settings", "-o names a data set made with other settings",
             "datagen al --temperatures 300 -o al4",
             "'al4' was started with other settings (differing: seed, snapshots_per_temperature, split_fractions, "
             "temperatures); rerun with the same arguments to resume, or write to a new directory with -o"),
        case("datagen-protocol-unknown", "--protocol v3 (no such protocol)",
             "datagen al --temperatures 300 --protocol v3 -o ds",
             "--protocol 'v3' is unknown; known protocols: v1 (bigdens-dft-v1), v2 (bigdens-dft-v2)"),
        case("datagen-resume-other-protocol", "-o names a data set of another protocol",
             "datagen al --temperatures 300 --protocol v2 -o al4",
             "'al4' is a protocol 'bigdens-dft-v1' data set, not 'bigdens-dft-v2'; resume it with its own protocol "
             "(--protocol v1), write 'bigdens-dft-v2' data to a new directory (-o), or pass "
             "allow_mixed_protocols=True (--allow-mixed-protocols) to mix the two in this one"),
        case("relabel-output-is-input", "data relabel -o names its own input data set",
             "data relabel al4 --protocol v2 -o al4",
             "-o 'al4' is one of the inputs: write the new labels to another folder"),
        case("relabel-protocol-unknown", "data relabel --protocol v3 (no such protocol)",
             "data relabel al4 --protocol v3 -o new",
             "--protocol 'v3' is unknown; known protocols: v1 (bigdens-dft-v1), v2 (bigdens-dft-v2)"),
    ],
    "Active learning (suggest, learn; refused before any scoring, MD or DFT)": [
        case("suggest-no-budget", "neither --budget nor --count", "suggest " + SUGGEST,
             "give --budget CORE_SECONDS or --count N"),
        case("suggest-budget-zero", "--budget 0", "suggest " + SUGGEST + " --budget 0",
             "--budget must be > 0 core-seconds, got 0.0"),
        case("suggest-budget-too-small", "a budget below the cheapest candidate",
             "suggest " + SUGGEST + " --budget 1",
             "the budget of 1 core-seconds is smaller than the cheapest candidate (al: about … core-seconds of "
             "DFT); raise --budget"),
        case("suggest-species-unknown", "a candidate with a species the model lacks",
             "suggest shipped-al.safetensors pu.xyz --count 1 --workers 0 --cost-data al4",
             "candidate 'pu' contains Pu, which the model was not trained on (it knows Al); remove it from the pool"),
        case("suggest-only-bohr", "the only candidate is a cell written in Bohr (predict refuses it)",
             "suggest shipped-al.safetensors bohr.xyz --count 1 --workers 0 --cost-data al4",
             "no candidate is left to rank: 1 of 1 lie outside the model's domain (first: 'bohr': 100 % of the atoms "
             "have their nearest neighbour outside the training cells' 2.17–2.85 Å (±25 %): the median "
             "nearest-neighbour distance is 5.41 Å (about 1.89×: is the cell in Bohr? bigdens reads Å)); give candidates "
             "like the model's training cells"),
        case("suggest-empty-pool", "a pool file without candidates",
             "suggest shipped-al.safetensors empty-pool.json --count 1 --workers 0 --cost-data al4",
             "the candidate pool is empty; give structure files or generators"),
        case("suggest-candidate-missing", "a candidate that is neither a file nor a generator",
             "suggest shipped-al.safetensors nosuch.xyz --count 1 --workers 0 --cost-data al4",
             "candidate 'nosuch.xyz' is neither a file nor a generator ('al FLAGS' or 'sige FLAGS', with the flags "
             "of `bigdens datagen`)"),
        case("suggest-generator-bad", "a generator without temperatures",
             "suggest shipped-al.safetensors 'al --cells 2 2 2' --count 1 --workers 0 --cost-data al4",
             "candidate generator 'al --cells 2 2 2': the following arguments are required: --temperatures"),
        case("suggest-uncalibrated", "a model without an epistemic reference",
             "suggest al.safetensors al.xyz --count 1 --workers 0 --cost-data al4",
             "the model has no epistemic reference to score candidates against; calibrate it first (bigdens "
             "calibrate MODEL VALIDATION-DATA -o MODEL2)"),
        case("suggest-cost-data-not-dataset", "--cost-data that is not a data set",
             "suggest shipped-al.safetensors al.xyz --count 1 --workers 0 --cost-data notes",
             "--cost-data 'notes' is not a bigdens data set (no dataset.json in it)"),
        case("learn-holdout-overlaps", "a hold-out that is also training data",
             "learn shipped-al.safetensors " + LEARN + " --budget 1000 --holdout al4 --train al4",
             "hold-out cell 'al4-T0300-00' is also training or calibration data; a hold-out must be data the model "
             "never sees"),
        case("learn-holdout-renamed-train-cell", "a hold-out that is a renamed copy of a --train cell",
             "learn shipped-al.safetensors " + LEARN + " --budget 1000 --holdout renamed.npz --train "
             "al4/al4-T0300-00.npz",
             "hold-out cell 'renamed' is also training or calibration data (the same structure as 'al4-T0300-00'); "
             "a hold-out must be data the model never sees"),
        case("learn-holdout-renamed-model-cell", "a hold-out that is a renamed copy of the model's own training data "
             "(the model records its training cells' structure digests)",
             "learn trained-struct.safetensors " + LEARN + " --budget 1000 --holdout renamed.npz",
             "hold-out cell 'renamed' is the model's own training data (the same structure as its training cell "
             "'al4-T0300-00'); a hold-out must be data the model never sees"),
        case("learn-val-renamed-model-cell", "--val a renamed copy of the model's own training data",
             "learn trained-struct.safetensors --candidates al.xyz --val renamed.npz --cost-data al4 --workers 0 "
             "-o new.safetensors --budget 1000 --holdout al4/al4-T0900-00.npz",
             "--val cell 'renamed' is the model's own training data (the same structure as its training cell "
             "'al4-T0300-00'); σ and early stopping fitted on it would see training error: give --val cells the "
             "model never trained on"),
        case("learn-val-test-cell", "--val a data-set folder that holds a test cell (a folder gives all its splits)",
             "learn shipped-al.safetensors --candidates al.xyz --val al4-test --cost-data al4 --workers 0 "
             "-o new.safetensors --budget 1000 --holdout al4-test/al4-T0900-01.npz",
             "snapshot al4-T0900-01 is in the test split: learn calibrates on --val data every round (early "
             "stopping, σ), never on test data: give test cells as --holdout, and give --val the validation "
             "snapshots (.npz files) of a folder that also holds test cells (a folder gives all its splits)"),
        case("learn-budget-too-small", "a budget below the cheapest candidate",
             "learn shipped-al.safetensors " + LEARN + " --budget 1 --holdout al4/al4-T0900-00.npz",
             "the budget of 1 core-seconds is smaller than the cheapest candidate (al: about … core-seconds of "
             "DFT); raise --budget"),
        case("learn-rounds-zero", "--rounds 0",
             "learn shipped-al.safetensors " + LEARN + " --budget 1000 --rounds 0 --holdout al4/al4-T0900-00.npz",
             "--rounds must be >= 1, got 0"),
    ],
}

CASES: list[Case] = [c for cases in GROUPS.values() for c in cases]


# -- the inputs -----------------------------------------------------------------------------

def _make_model(path: Path, species=(13,), info=None) -> Path:
    from bigdens import descriptors
    from bigdens.bnn import Architecture, DensityModel, Scaling

    n = len(species)
    params = descriptors.DescriptorParams(species=tuple(species), m=(8,) * n, k=(3,) * n, r_cut=4.0)
    rng = np.random.default_rng(1)
    X = rng.uniform(0.5, 4.0, size=(300, params.n_features)).astype(np.float32)
    y = rng.uniform(0.01, 0.05, size=300)
    arch = Architecture(hidden=(16, 16), kind="mean-field")
    DensityModel.new(params, arch, Scaling.fit(X, y), seed=1, info=info).save(path)
    return path


def _domain_structures(d: Path) -> None:
    """Structures valid on their own that the shipped Al model refuses: pair.xyz, interstitial.xyz, md108.xyz
    (5 frames, frame 3 bad) and bohr.xyz (a 32-atom cell with its numbers in Bohr)."""
    from ase.build import bulk
    from ase.io import write
    from ase.units import Bohr

    from bigdens import structure

    al108 = bulk("Al", "fcc", a=structure.A_AL, cubic=True).repeat(3)
    pair = al108.copy()
    pair.positions[1] = pair.positions[0] + [0.6, 0.0, 0.0]
    write(d / "pair.xyz", pair)
    inter = al108.copy()
    inter.append("Al")
    inter.positions[108] = inter.positions[0] + [0.55, 0.0, 0.0]
    write(d / "interstitial.xyz", inter)
    frames = [structure.rattle(al108, 0.03, seed=k) for k in range(5)]
    frames[3].positions[1] = frames[3].positions[0] + [0.6, 0.0, 0.0]
    write(d / "md108.xyz", frames, format="extxyz")
    bohr = structure.fcc_al((2, 2, 2))
    bohr.set_cell(bohr.cell / Bohr, scale_atoms=True)
    write(d / "bohr.xyz", bohr)


def _density_files(d: Path) -> None:
    """Cube and CHGCAR files of densities that cannot be physical (from the first al4 snapshot), and an XSF file
    without a density (the Quantum ESPRESSO file tests/data/qe/si.rho.xsf.gz cut before its data block)."""
    import gzip

    from ase.calculators.vasp import VaspChargeDensity

    from bigdens.data import load
    from bigdens.io.cube import write_cube

    snap = load([AL4])[0]
    atoms, rho = snap.atoms(), snap.density.astype(np.float64)
    write_cube(d / "neg.cube", atoms, -rho)
    write_cube(d / "twice.cube", atoms, 2 * rho)  # twice the valence electrons (e.g. semicore states, wrong units)
    write_cube(d / "good.cube", atoms, rho)
    good = (d / "good.cube").read_text().splitlines(True)  # line 7: the first atom (Z, charge, x, y, z)
    (d / "z150.cube").write_text("".join(good[:6] + ["  150" + good[6][good[6].index(" ", 2):]] + good[7:]))
    write_cube(d / "diff.cube", atoms, rho - 1.01 * rho.mean())
    nan = rho.copy()
    nan[1, 2, 3] = np.nan
    write_cube(d / "nan.cube", atoms, nan)
    lines = (d / "neg.cube").read_text().splitlines(True)  # line 5: the second axis' count and voxel vector
    (d / "zerovox.cube").write_text("".join(lines[:4] + [f"{lines[4].split()[0]} 0.0 0.0 0.0\n"] + lines[5:]))
    (d / "flat.cube").write_text("".join(lines[:4] + [lines[3]] + lines[5:]))
    paw = rho.copy()  # 1 % of the electrons in negative values at 8 points, as a PAW pseudo-density may have
    paw[:2, :2, :2] = -0.01 * rho.sum() / 8
    chg = VaspChargeDensity(None)
    chg.atoms, chg.chg = [atoms], [paw]
    chg.write(str(d / "paw_CHGCAR"), format="chgcar")
    lines = (d / "paw_CHGCAR").read_text().splitlines(True)  # lines 3-5: the lattice vectors
    (d / "flat_CHGCAR").write_text("".join(lines[:4] + [lines[3]] + lines[5:]))
    with gzip.open(QE / "si.rho.xsf.gz", "rt") as fh:
        lines = fh.read().splitlines(True)
    (d / "nogrid.xsf").write_text("".join(lines[: lines.index("BEGIN_BLOCK_DATAGRID_3D\n")]))


def _rewrite_model(src: Path, dst: Path, *, meta=None, tensors=None) -> None:
    """Copy a model file, changing its bigdens metadata or its tensors."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        metadata = dict(f.metadata())
        weights = {k: f.get_tensor(k) for k in f.keys()}
    if meta is not None:
        metadata["bigdens"] = json.dumps(meta(json.loads(metadata["bigdens"])))
    if tensors is not None:
        weights = tensors(weights)
    save_file(weights, str(dst), metadata=metadata)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of every input the cases name (built once; each test works on a hard-linked copy)."""
    from ase import Atoms
    from ase.io import write

    from bigdens import engine, structure

    d = tmp_path_factory.mktemp("inputs")
    al = structure.fcc_al((1, 1, 1))
    write(d / "al.xyz", al)
    (d / "al.weird").write_text("Al 0 0 0\n")
    (d / "empty.xyz").write_text("")
    (d / "oneline.xyz").write_bytes(b"7" * ((1 << 20) + 10))  # no line break in its first MiB
    (d / "garbage.xyz").write_text("hello world\nthis is not an xyz file\n")
    write(d / "zero.xyz", Atoms(cell=al.cell, pbc=True))
    a = al.copy()
    a.positions[1] = np.nan
    write(d / "nan.xyz", a)
    a = al.copy()
    a.positions[1] = a.positions[0] + [0.3, 0.0, 0.0]
    write(d / "close.xyz", a)
    a = al.copy()
    a.pbc = False
    write(d / "nopbc.xyz", a)
    a = al.copy()
    a.cell[2] = a.cell[0]
    write(d / "singular.xyz", a)
    a = al.copy()
    a.numbers[:] = 94
    write(d / "pu.xyz", a)
    write(d / "POSCAR", al, format="vasp")
    (d / "POSCAR").write_text("".join((d / "POSCAR").read_text().splitlines(True)[:4]))  # cut after 2 vectors
    write(d / "al.data", al, format="lammps-data", masses=True)
    a = al.copy()
    a.positions[2, 0] += 1e17
    write(d / "far.xyz", a)
    _domain_structures(d)
    _density_files(d)

    model = _make_model(d / "al.safetensors")
    _make_model(d / "si.safetensors", species=(14,))
    _make_model(d / "trained.safetensors", info={"data": {"train": [{"name": "al4-T0300-00"}]}})
    (d / "notmodel.safetensors").write_text("this is not a model\n")
    (d / "truncated.safetensors").write_bytes(model.read_bytes()[:200])
    (d / "model.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    from safetensors.numpy import save_file

    save_file({"w": np.zeros(3, dtype=np.float32)}, str(d / "plain.safetensors"))

    def more_m(meta):
        meta["descriptor"]["m"] = [9]
        return meta

    def newer(meta):
        return dict(meta, format_version=99, bigdens_version="99.0")

    def nan_weight(weights):
        k = sorted(weights)[0]
        weights[k] = weights[k].clone()
        weights[k].view(-1)[0] = float("nan")
        return weights

    _rewrite_model(model, d / "badmeta.safetensors", meta=more_m)
    _rewrite_model(model, d / "newer.safetensors", meta=newer)
    _rewrite_model(model, d / "nanweights.safetensors", tensors=nan_weight)

    def flipped_bit(weights):  # the lowest exponent bit of one trunk weight: the file stays a valid safetensors
        import torch

        k = sorted(weights)[0]
        weights[k] = weights[k].clone()
        weights[k].view(-1).view(torch.int32)[3] ^= 1 << 23
        return weights

    def transposed(weights):
        k = next(k for k in sorted(weights) if weights[k].ndim == 2 and weights[k].shape[0] != weights[k].shape[1])
        weights[k] = weights[k].t().contiguous()
        return weights

    def missing(weights):
        del weights[sorted(weights)[-1]]
        return weights

    _rewrite_model(model, d / "flipped.safetensors", tensors=flipped_bit)
    _rewrite_model(model, d / "transposed.safetensors", tensors=transposed)
    _rewrite_model(model, d / "missing-tensor.safetensors", tensors=missing)

    shutil.copytree(AL4, d / "al4")
    shutil.copy(ROOT / "bigdens" / "models" / "al.safetensors", d / "shipped-al.safetensors")
    (d / "damaged").mkdir()  # the shipped Al model with one flipped bit, beside the shipped models' hash record
    shutil.copy(ROOT / "bigdens" / "models" / "SHA256SUMS", d / "damaged" / "SHA256SUMS")
    raw = bytearray((ROOT / "bigdens" / "models" / "al.safetensors").read_bytes())
    raw[-5] ^= 0x01
    (d / "damaged" / "al.safetensors").write_bytes(bytes(raw))
    from bigdens.active.candidates import save_pool

    save_pool(d / "empty-pool.json", [])
    (d / "empty-ds").mkdir()
    (d / "empty-ds" / "dataset.json").write_text(json.dumps(
        {"format": "bigdens-dataset", "format_version": 1, "protocol": "bigdens-dft-v1", "snapshots": []}))
    shutil.copytree(AL4, d / "nan-ds")
    snap = d / "nan-ds" / "al4-T0300-00.npz"
    arrays = dict(np.load(snap))
    arrays["density"] = arrays["density"].copy()
    arrays["density"][0, 0, 0] = np.nan
    np.savez(snap, **arrays)
    shutil.copytree(AL4, d / "truncated-ds")
    snap = d / "truncated-ds" / "al4-T0300-00.npz"
    snap.write_bytes(snap.read_bytes()[:500])
    shutil.copytree(AL4, d / "trainonly-ds")
    manifest = json.loads((d / "trainonly-ds" / "dataset.json").read_text())
    manifest["snapshots"] = [e for e in manifest["snapshots"] if e["split"] == "train"]
    (d / "trainonly-ds" / "dataset.json").write_text(json.dumps(manifest))
    shutil.copytree(AL4, d / "al4-test")  # al4 with a test split: al4-T0900-01
    manifest = json.loads((d / "al4-test" / "dataset.json").read_text())
    for entry in manifest["snapshots"]:
        entry["split"] = "test" if entry["name"] == "al4-T0900-01" else entry["split"]
    (d / "al4-test" / "dataset.json").write_text(json.dumps(manifest))
    # A test cell shipped in datasets/ (a file of the old format: no recorded split), copied under another name.
    shutil.copy(ROOT / "datasets" / "al32" / "al32-T0300-01.npz", d / "mine.npz")
    # A training cell copied under another name, and a model that records the structure of that cell.
    shutil.copy(AL4 / "al4-T0300-00.npz", d / "renamed.npz")
    from bigdens.data import read_snapshot
    from bigdens.train import _provenance

    _make_model(d / "trained-struct.safetensors",
                info={"data": {"train": _provenance([read_snapshot(AL4 / "al4-T0300-00.npz")])}})
    (d / "damaged-ds").mkdir()
    (d / "damaged-ds" / "dataset.json").write_text("{not json")
    (d / "notes").mkdir()
    (d / "notes" / "todo.txt").write_text("my notes\n")

    good = "jobqueue: {cores: 2, memory: 1GB, walltime: '00:10:00'}\n"
    profiles = {
        "good": good,
        "bad-yaml": "jobqueue: [cores: 2\n",
        "not-mapping": "- 1\n- 2\n",
        "unknown-key": good + "bigdens: {jobz: 2}\n",
        "unknown-section": good + "extra: 1\n",
        "missing-key": "jobqueue: {memory: 1GB, walltime: '00:10:00'}\n",
        "wrong-type": "jobqueue: {cores: two, memory: 1GB, walltime: '00:10:00'}\n",
        "bad-memory": "jobqueue: {cores: 2, memory: lots, walltime: '00:10:00'}\n",
        "bad-walltime": "jobqueue: {cores: 2, memory: 1GB, walltime: '10 minutes'}\n",
    }
    for name, text in profiles.items():
        (d / f"{name}.yaml").write_text(text)

    (d / "file.zarr").write_text("precious\n")
    atoms = structure.read(d / "al.xyz")
    # The random model is no physical model: its stores are made past the domain checks (bigdens.domain).
    settings = dict(model=model, grid=(4, 4, 4), block=4, mc_samples=1, workers=0, progress=False,
                    allow_out_of_domain=True)
    engine.predict(atoms, out=d / "done.zarr", **settings)
    engine.predict(atoms, out=d / "partial.zarr", max_blocks=0, **settings)
    moved = atoms.copy()
    moved.positions[0] += 0.05
    engine.predict(moved, out=d / "other-run.zarr", **settings)
    _damaged_stores(d)
    _locked_stores(d)
    _old_store(d)
    _format1_store(d)
    _trajectories(d, atoms, settings)
    return d


def _trajectories(d: Path, atoms, settings: dict) -> None:
    """md.xyz (3 frames), npt.xyz (cell changes at frame 1), grow.xyz (an atom fewer at frame 1), an empty
    ASE .traj, and traj.zarr (2 frames predicted)."""
    from ase.io import Trajectory, write

    from bigdens import engine, structure, trajectory

    frames = [structure.rattle(atoms, 0.05, seed=k) for k in range(3)]
    write(d / "md.xyz", frames, format="extxyz")
    npt = [a.copy() for a in frames]
    npt[1].set_cell(npt[1].cell[:] * 1.01, scale_atoms=True)
    write(d / "npt.xyz", npt, format="extxyz")
    write(d / "grow.xyz", [frames[0], frames[1][:3]], format="extxyz")
    Trajectory(str(d / "empty.traj"), "w").close()
    engine.run(trajectory.Trajectory(frames=frames[:2], index=[0, 1]), engine.PredictConfig(out=d / "traj.zarr",
                                                                                            **settings))


def _old_store(d: Path) -> None:
    """A copy of done.zarr as a bigdens without per-atom charges wrote it (no charges, no per-block sums)."""
    old = d / "old.zarr"
    shutil.copytree(d / "done.zarr", old)
    for name in ("charge", "charge_std"):
        shutil.rmtree(old / name)
    for f in (old / "ledger").glob("charges-*.npy"):
        f.unlink()
    for f in (old / "ledger").glob("block-*.json"):
        f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "charges"}))
    meta = json.loads((old / "zarr.json").read_text())
    meta["attributes"].pop("charges")
    for name in ("charge", "charge_std"):
        meta["consolidated_metadata"]["metadata"].pop(name)
    (old / "zarr.json").write_text(json.dumps(meta))


def _format1_store(d: Path) -> None:
    """A copy of partial.zarr as a bigdens of store format 1 wrote it (no atom_tiles group)."""
    old = d / "format1.zarr"
    shutil.copytree(d / "partial.zarr", old)
    shutil.rmtree(old / "atom_tiles")
    meta = json.loads((old / "zarr.json").read_text())
    assert meta["attributes"]["format_version"] == 2, "the case assumes this bigdens writes store format 2"
    meta["attributes"]["format_version"] = 1
    meta["attributes"]["bigdens_version"] = "0.1.0"
    listed = meta["consolidated_metadata"]["metadata"]
    for name in [k for k in listed if k == "atom_tiles" or k.startswith("atom_tiles/")]:
        listed.pop(name)
    (old / "zarr.json").write_text(json.dumps(meta))


def _damaged_stores(d: Path) -> None:
    """Copies of done.zarr, each damaged one way (as a disk, a user or a sync tool might)."""
    import zarr

    def copy(name):
        shutil.copytree(d / "done.zarr", d / name)
        return d / name

    (copy("chunk-deleted.zarr") / "density" / "c" / "0" / "0" / "0").unlink()
    chunk = copy("chunk-truncated.zarr") / "density" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:10])
    shutil.rmtree(copy("var-deleted.zarr") / "density_std")
    zarr.open_array(str(copy("coords-edited.zarr") / "x"), mode="r+")[1] += 0.1
    meta = copy("meta-edited.zarr") / "density" / "zarr.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "fill_value": 0.0}))
    zarr.open_array(str(copy("atoms-moved.zarr") / "positions"), mode="r+")[1, 0] += 0.01
    (copy("ledger-deleted.zarr") / "ledger" / "block-0000000.json").unlink()
    root = copy("half-root.zarr") / "zarr.json"
    root.write_bytes(root.read_bytes()[:200])  # a root metadata write cut short
    shutil.rmtree(copy("ledger-gone.zarr") / "ledger")
    swapped = copy("from-other-run.zarr")  # its one block, with its ledger entry and charges file, from another run
    for name in ("density", "density_std", "density_std_epistemic", "density_std_aleatoric"):
        shutil.copyfile(d / "other-run.zarr" / name / "c" / "0" / "0" / "0", swapped / name / "c" / "0" / "0" / "0")
    for name in ("block-0000000.json", "charges-0000000.npy"):
        shutil.copyfile(d / "other-run.zarr" / "ledger" / name, swapped / "ledger" / name)


def _locked_stores(d: Path) -> None:
    """Copies of done.zarr with the lock of a run elsewhere, of a live process here, and a damaged lock."""
    import socket

    from bigdens import storelock

    def lock(name, **fields):
        shutil.copytree(d / "done.zarr", d / name)
        entry = {"command": "bigdens predict", "host": "node7", "pid": 4242, "pid_start": None, "boot_id": None,
                 "run_id": "5f0c6d2a9e8b4c1d8a7b6c5d4e3f2a1b", "since": "2025-01-01T00:00:00+00:00",
                 "store": str(d / name), "token": "t" * 32, **fields}
        storelock.lock_path(d / name).write_text(json.dumps(entry))

    lock("busy.zarr")
    stat = Path("/proc/1/stat").read_text()
    lock("busy-here.zarr", host=socket.gethostname(), pid=1, pid_start=int(stat[stat.rindex(")") + 2:].split()[19]),
         boot_id=storelock._boot_id())
    shutil.copytree(d / "done.zarr", d / "busy-bad.zarr")
    storelock.lock_path(d / "busy-bad.zarr").write_text("{not json")


def _tree(root: Path) -> dict[str, tuple]:
    """Every file (size, mtime, inode) and folder under ``root``.

    Writing a file changes its mtime; replacing it (a rename over it) changes
    its inode; so does removing and re-creating it.
    """
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_dir():
            out[key] = ("dir",)
        else:
            st = p.stat()
            out[key] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


@pytest.fixture(scope="module")
def inputs_tree(inputs) -> dict[str, tuple]:
    """:func:`_tree` of the inputs, which every test's copy starts equal to (hard links)."""
    return _tree(inputs)


def _pattern(message: str) -> re.Pattern:
    return re.compile(".*".join(re.escape(part) for part in message.split("…")), re.DOTALL)


# -- the tests -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, inputs, inputs_tree, tmp_path, capsys, monkeypatch):
    from bigdens.cli import main

    if case.skip_with_cuda:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA GPU is present: --device cuda is not a bad input here")
    monkeypatch.delenv("BIGDENS_CLUSTER_CONFIGS", raising=False)
    # Hard links: the copy's files are the inputs' inodes, so a command that wrote into one would
    # change its mtime here (and fail this case) and in the inputs (and fail the cases after it too).
    shutil.copytree(inputs, tmp_path, dirs_exist_ok=True, symlinks=True, copy_function=os.link)
    before = _tree(tmp_path)
    assert before == inputs_tree, "an earlier case changed the shared inputs"
    capsys.readouterr()

    status = main(list(case.argv))

    out, err = capsys.readouterr()
    assert status == case.status, (status, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    prefix = case.prefix
    assert lines[0].startswith(prefix), lines[0]
    assert _pattern(case.message).fullmatch(lines[0][len(prefix):]), \
        f"\n got: {lines[0][len(prefix):]}\nwant: {case.message}"
    assert _tree(tmp_path) == before, "a refused command created, changed or removed files"


def test_cases_cover_every_command():
    from bigdens.cli import COMMANDS

    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    missing = set(COMMANDS) - {c.command for c in CASES}
    assert not missing, f"no bad-input case for: {sorted(missing)}"
    assert len(CASES) >= 30


def render() -> str:
    """The catalogue's tables, one per group, in Markdown."""

    def code(text: str) -> str:
        text = text.replace("|", "\\|")
        return f"`` {text} ``" if "`" in text else f"`{text}`"

    parts = [BEGIN]
    for title, cases in GROUPS.items():
        parts += ["", f"### {title}", "",
                  "| id | bad input | command | error message (after `bigdens CMD: error: `) | exit |",
                  "|---|---|---|---|---|"]
        for c in cases:
            note = " (skipped where a CUDA GPU is present)" if c.skip_with_cuda else ""
            parts.append(f"| `{c.id}` | {c.what}{note} | {code('bigdens ' + shlex.join(c.argv))} | "
                         f"{code(c.message)} | {c.status} |")
    parts += ["", END]
    return "\n".join(parts)


def test_catalogue_matches_the_cases():
    text = DOC.read_text()
    assert BEGIN in text and END in text, f"{DOC} lacks the generated block"
    block = text[text.index(BEGIN): text.index(END) + len(END)]
    assert block == render(), f"{DOC} is out of date: rewrite it with `.venv/bin/python tests/test_bad_inputs.py`"


if __name__ == "__main__":  # rewrite the generated block of docs/bad-inputs.md
    text = DOC.read_text()
    new = text[: text.index(BEGIN)] + render() + text[text.index(END) + len(END):]
    DOC.write_text(new)
    print(f"wrote {DOC}: {len(CASES)} cases", file=sys.stderr)
