"""The .cimp container: round trip, determinism, integrity, versioning; run-time consistency checks."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import zipfile

import numpy as np
import pytest

import cimc
import cimc.program
from cimc.errors import CimcError, ProgramError
from cimc.program import FORMAT_VERSION, Program

from conftest import compile_model, uniform
from models import conv_net


@pytest.fixture(scope="module")
def conv(compiled):
    return compiled("conv_net")


@pytest.fixture(scope="module")
def wide(compiled):
    """A layer on two tiles whose partial sums travel over the network."""
    c = compiled("wide_conv_net", "narrow")
    assert len(c.program.report["layers"][0]["tiles"]) == 2
    return c


def _edited(program: Program, edit) -> Program:
    """A deep copy of ``program`` changed by ``edit`` (so the writer signs the edited content)."""
    p = copy.deepcopy(program)
    p.__dict__.pop("_nodes_by_name", None)
    edit(p)
    return p


def _signed(program: Program, edit) -> bytes:
    """The bytes cimc itself writes for an edited program: integrity data is correct, content is not."""
    return _edited(program, edit).to_bytes()


# -- round trip and determinism ---------------------------------------------------------------

def test_save_load_round_trip(conv, tmp_path):
    path = tmp_path / "conv.cimp"
    conv.program.save(path)
    loaded = Program.load(path)
    p = conv.program
    assert loaded.manifest == p.manifest
    assert loaded.target == p.target
    assert (loaded.inputs, loaded.outputs, loaded.tensors) == (p.inputs, p.outputs, p.tensors)
    assert loaded.nodes == p.nodes and loaded.crossbars == p.crossbars and loaded.tiles == p.tiles
    assert loaded.schedule.tasks == p.schedule.tasks and loaded.schedule.start == p.schedule.start
    assert loaded.report == p.report
    assert sorted(loaded.arrays) == sorted(p.arrays)
    for k in p.arrays:
        np.testing.assert_array_equal(loaded.arrays[k], p.arrays[k])
        assert loaded.arrays[k].dtype == p.arrays[k].dtype
    xs = uniform(conv.model, 5, seed=9)
    a, b = cimc.run(p, {"x": xs}), cimc.run(loaded, {"x": xs})
    np.testing.assert_array_equal(a.outputs["prob"], b.outputs["prob"])
    assert loaded.to_bytes() == path.read_bytes()
    assert not [f for f in tmp_path.iterdir() if f.name != "conv.cimp"]      # no temp file left


def test_manifest_contents(conv):
    m = conv.program.manifest
    assert m["format"] == "cimp" and m["format_version"] == FORMAT_VERSION
    assert m["cimc_version"] == cimc.__version__
    assert m["model_name"] == "conv_net" and len(m["model_sha256"]) == 64
    assert m["options"]["scheduler"] == "layer" and m["options"]["calibration_samples"] == 256
    with zipfile.ZipFile(io.BytesIO(conv.program.to_bytes())) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    assert names[:2] == ["manifest.json", "program.json"]
    assert "arrays/xbar/0.npy" in names and "arrays/layer/conv/w_scale.npy" in names
    assert manifest["target"]["name"] == "small"


def test_same_program_serializes_identically(conv):
    assert conv.program.to_bytes() == conv.program.to_bytes()
    assert Program.from_bytes(conv.program.to_bytes()).to_bytes() == conv.program.to_bytes()


def test_compile_twice_gives_identical_bytes(small):
    """Deterministic output: the same model, target and options give the same .cimp bytes."""
    model = conv_net()
    a = compile_model(model, small).to_bytes()
    b = compile_model(model, small).to_bytes()
    if a != b:
        pa, pb = (json.loads(zipfile.ZipFile(io.BytesIO(x)).read("program.json")) for x in (a, b))
        differs = sorted(k for k in pa if pa[k] != pb[k])
        detail = {k: sorted(kk for kk in pa[k] if pa[k][kk] != pb[k][kk]) for k in differs
                  if isinstance(pa[k], dict)}
        pytest.fail(f"two compiles differ in program.json {differs}: {detail}")


# -- integrity --------------------------------------------------------------------------------

def _zip_regions(data: bytes) -> list[tuple[int, int, str]]:
    """(begin, end, description) of the zip structures in ``data``."""
    regions = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            header = 30 + len(info.filename.encode()) + len(info.extra)
            regions.append((info.header_offset, info.header_offset + header, f"local header of {info.filename}"))
            regions.append((info.header_offset + header, info.header_offset + header + info.compress_size,
                            f"deflated data of {info.filename}"))
        regions.append((zf.start_dir, len(data), "central directory"))
    return regions


def test_flipped_byte_anywhere_in_the_middle(conv):
    data = conv.program.to_bytes()
    undetected = []
    for pos in range(len(data) // 10, len(data) - len(data) // 10):
        bad = bytearray(data)
        bad[pos] ^= 0xFF
        try:
            Program.from_bytes(bytes(bad))
        except ProgramError:
            continue
        undetected.append(pos)
    if undetected:
        kinds: dict[str, int] = {}
        for pos in undetected:
            where = next((d for a, b, d in _zip_regions(data) if a <= pos < b), "outside the zip")
            kind = where.split(" of ")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        pytest.fail(f"{len(undetected)} of {len(data) - 2 * (len(data) // 10)} single-byte edits in the middle "
                    f"of a {len(data)}-byte .cimp load without error (offsets {undetected[:8]}...); "
                    f"by zip structure: {kinds}")


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_file(conv, tmp_path, fraction):
    data = conv.program.to_bytes()
    path = tmp_path / "t.cimp"
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(ProgramError, match="t.cimp"):
        Program.load(path)


def test_not_a_zip(tmp_path):
    path = tmp_path / "x.cimp"
    path.write_bytes(b"hello, I am not a program")
    with pytest.raises(ProgramError):
        Program.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProgramError, match="does not exist"):
        Program.load(tmp_path / "none.cimp")


def test_format_version_bumped(conv, monkeypatch):
    """A file written by a future cimc (format version 2 everywhere the writer records it)."""
    with monkeypatch.context() as m:
        m.setattr(cimc.program, "FORMAT_VERSION", FORMAT_VERSION + 1)
        data = _signed(conv.program, lambda p: p.manifest.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ProgramError, match=rf"version {FORMAT_VERSION + 1}\b.*version {FORMAT_VERSION}\b"):
        Program.from_bytes(data)


def test_manifest_version_bumped(conv):
    data = _signed(conv.program, lambda p: p.manifest.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ProgramError, match="version"):
        Program.from_bytes(data)


def test_signed_copy_without_changes_loads(conv):
    """The editing helper itself produces loadable files (so the failures around it are real)."""
    loaded = Program.from_bytes(_signed(conv.program, lambda p: None))
    assert loaded.manifest == conv.program.manifest and loaded.tiles == conv.program.tiles


def test_wrong_format_name(conv):
    with pytest.raises(ProgramError, match="format"):
        Program.from_bytes(_signed(conv.program, lambda p: p.manifest.update(format="zip")))


def test_invalid_embedded_target(conv):
    def edit(p):
        p.target = dataclasses.replace(p.target, crossbar=dataclasses.replace(p.target.crossbar, rows=-4))
    with pytest.raises(ProgramError, match="embedded target"):
        Program.from_bytes(_signed(conv.program, edit))


def test_invalid_schedule_in_file(conv):
    def overlap(p):
        p.schedule.start[1] = p.schedule.start[0]        # two conv sets on one crossbar at once
    with pytest.raises(ProgramError, match="schedule is invalid"):
        Program.from_bytes(_signed(conv.program, overlap))


def test_missing_crossbar_contents(conv):
    """A program whose crossbar data is missing fails with a ProgramError (at load or at run), never
    with an internal error."""
    def drop(p):
        del p.arrays["xbar/0"]
    with pytest.raises(ProgramError):
        program = Program.from_bytes(_signed(conv.program, drop))
        cimc.run(program, {"x": uniform(conv.model, 1, seed=0)})


@pytest.mark.parametrize("edit", [
    lambda a: a.pop("xbar_adc/0"),
    lambda a: a.update({"xbar_adc/0": a["xbar_adc/0"][:, :, :-1]}),
    lambda a: a.update({"xbar_adc/0": a["xbar_adc/0"] + np.uint8(20)}),
    lambda a: a.update({"xbar_adc/0": a["xbar_adc/0"].astype(np.int64)}),
], ids=["missing", "columns", "bits", "dtype"])
def test_malformed_adc_settings(conv, edit):
    with pytest.raises(ProgramError, match="crossbar 0 has no ADC settings"):
        Program.from_bytes(_signed(conv.program, lambda p: edit(p.arrays)))


def test_save_into_missing_folder(conv, tmp_path):
    with pytest.raises(CimcError, match="does not exist"):
        conv.program.save(tmp_path / "nope" / "p.cimp")
    assert list(tmp_path.iterdir()) == []


# -- the runtime's read-before-write check -----------------------------------------------------

def _tampered(program: Program, edit) -> Program:
    return _edited(program, lambda p: edit(p.tiles))


def _find(tiles, pred) -> tuple[int, int]:
    for ti, stream in enumerate(tiles):
        for i, ins in enumerate(stream):
            if pred(ins):
                return ti, i
    raise AssertionError("instruction not found")


def test_untampered_programs_run(conv, wide):
    for c in (conv, wide):
        cimc.run(c.program, {"x": uniform(c.model, 2, seed=1)})


def test_writeback_moved_before_its_mvm(conv):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "writeback" and ins["layer"] == "conv" and ins["rows"] == [3, 4])
        mvm = tiles[ti][_find(tiles, lambda ins: ins["op"] == "mvm" and ins["rows"] == [3, 4])[1]]
        tiles[ti][i]["t"] = mvm["done"] - 1
    with pytest.raises(ProgramError, match="acc:conv"):
        cimc.run(_tampered(conv.program, edit), {"x": uniform(conv.model, 1, seed=0)})


def test_writeback_before_remote_partial_sums_arrive(wide):
    """The local crossbars are done but the other tile's partial sums are still on the network."""
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "recv" and ins["reduce"] and ins["rows"] == [2, 3])
        local = next(ins for ins in tiles[ti] if ins["op"] == "mvm" and ins["rows"] == [2, 3])
        wb = next(ins for ins in tiles[ti] if ins["op"] == "writeback" and ins["rows"] == [2, 3])
        assert local["done"] < tiles[ti][i]["t"]
        wb["t"] = local["done"]
    with pytest.raises(ProgramError, match="acc:wide_conv"):
        cimc.run(_tampered(wide.program, edit), {"x": uniform(wide.model, 1, seed=0)})


def test_deleted_load(conv):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "load")
        del tiles[ti][i]
    with pytest.raises(ProgramError, match="before they are written"):
        cimc.run(_tampered(conv.program, edit), {"x": uniform(conv.model, 1, seed=0)})


def test_deleted_load_on_second_tile(wide):
    def edit(tiles):
        loads = [i for i, ins in enumerate(tiles[1]) if ins["op"] == "load"]
        assert len(loads) == 1                     # tile 1 holds half of the layer's crossbars
        del tiles[1][loads[0]]
    with pytest.raises(ProgramError, match="tile 1 reads"):
        cimc.run(_tampered(wide.program, edit), {"x": uniform(wide.model, 1, seed=0)})


def test_deleted_partial_sum_recv(wide):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "recv" and ins["reduce"])
        del tiles[ti][i]
    with pytest.raises(ProgramError):
        cimc.run(_tampered(wide.program, edit), {"x": uniform(wide.model, 1, seed=0)})


def test_deleted_send(wide):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "send" and not ins["tensor"].startswith("acc:"))
        del tiles[ti][i]
    with pytest.raises(ProgramError, match="before it was sent"):
        cimc.run(_tampered(wide.program, edit), {"x": uniform(wide.model, 1, seed=0)})


def test_mvm_before_its_input_arrives(wide):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "recv" and not ins["reduce"])
        mvm = next(ins for ins in tiles[ti] if ins["op"] == "mvm")
        mvm["t"] = tiles[ti][i]["t"] - 1
    with pytest.raises(ProgramError, match="before they are written"):
        cimc.run(_tampered(wide.program, edit), {"x": uniform(wide.model, 1, seed=0)})


def test_vector_op_before_its_input(conv):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "vec" and ins["node"] == "pool")
        tiles[ti][i]["t"] = 0
    with pytest.raises(ProgramError, match="before they are written"):
        cimc.run(_tampered(conv.program, edit), {"x": uniform(conv.model, 1, seed=0)})


def test_deleted_store(conv):
    def edit(tiles):
        ti, i = _find(tiles, lambda ins: ins["op"] == "store")
        del tiles[ti][i]
    with pytest.raises(ProgramError, match="never stores"):
        cimc.run(_tampered(conv.program, edit), {"x": uniform(conv.model, 1, seed=0)})


def test_tampered_stream_in_a_signed_file(conv):
    """A file whose instruction streams were edited (and signed) loads, but cannot run."""
    def edit(p):
        for stream in p.tiles:
            stream[:] = [ins for ins in stream if ins["op"] != "load"]
    program = Program.from_bytes(_signed(conv.program, edit))
    with pytest.raises(ProgramError, match="before they are written"):
        cimc.run(program, {"x": uniform(conv.model, 1, seed=0)})
